//! The catalogue against its own files: one schema and at least one golden
//! example per event type, every example valid, and mutations of the examples
//! rejected with a violation at the right place.

mod support;

use ledger_catalogue::{Catalogue, SchemaViolation, EVENT_TYPES};
use ledger_core::event::GENESIS_HASH;
use ledger_core::EventType;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Schema files in `events/` that are not per-type `data` schemas.
const NON_DATA_SCHEMAS: &[&str] = &["defs.schema.json", "envelope.schema.json"];

fn example(file: &str) -> Value {
    let path = support::examples_dir().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("golden examples are JSON")
}

/// Applies `mutate` to a copy of a golden example and returns the violations.
fn violations_of(file: &str, mutate: impl FnOnce(&mut Value)) -> Vec<SchemaViolation> {
    let mut json = example(file);
    mutate(&mut json);
    Catalogue::shared()
        .validate_envelope(&json)
        .expect_err("the mutated example must be rejected")
}

/// Asserts a violation at exactly `path` whose message contains `words`.
#[track_caller]
fn check(violations: &[SchemaViolation], path: &str, words: &str) {
    assert!(
        violations
            .iter()
            .any(|v| v.path == path && v.message.contains(words)),
        "expected a violation at {path:?} mentioning {words:?}, got: {violations:#?}"
    );
}

#[test]
fn one_schema_file_per_event_type_and_no_other() {
    let expected: BTreeSet<String> = EventType::ALL
        .iter()
        .map(|ty| format!("{ty}.schema.json"))
        .chain(NON_DATA_SCHEMAS.iter().map(|s| s.to_string()))
        .collect();
    let on_disk: BTreeSet<String> = support::files_ending(&support::events_dir(), ".schema.json")
        .into_iter()
        .collect();
    assert_eq!(on_disk, expected, "events/*.schema.json vs EventType::ALL");

    let embedded: Vec<&str> = EVENT_TYPES.iter().map(|(name, _)| *name).collect();
    let all: Vec<&str> = EventType::ALL.iter().map(|ty| ty.as_str()).collect();
    assert_eq!(embedded, all, "EVENT_TYPES must follow EventType::ALL");
}

#[test]
fn embedded_schemas_are_the_files_on_disk() {
    let dir = support::events_dir();
    for (name, text) in EVENT_TYPES {
        let on_disk = std::fs::read_to_string(dir.join(format!("{name}.schema.json"))).unwrap();
        assert_eq!(*text, on_disk, "{name}: rebuild the crate");
    }
}

#[test]
fn every_schema_names_its_own_file() {
    let dir = support::events_dir();
    for file in support::files_ending(&dir, ".schema.json") {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}"
        );
        assert_eq!(
            schema["$id"].as_str(),
            Some(format!("{}{file}", ledger_catalogue::BASE_URI).as_str()),
            "{file}"
        );
    }
}

#[test]
fn at_least_one_golden_example_per_event_type() {
    let covered: BTreeSet<String> = support::golden_files()
        .iter()
        .map(|(name, _)| support::type_of_file(name).to_owned())
        .collect();
    for ty in EventType::ALL {
        assert!(
            covered.contains(ty.as_str()),
            "no events/examples/{ty}.json"
        );
    }
    for name in &covered {
        assert!(
            EventType::parse(name).is_some(),
            "events/examples/{name}*.json: not an event type"
        );
    }
}

#[test]
fn every_golden_example_validates() {
    let catalogue = Catalogue::shared();
    for (name, bytes) in support::golden_files() {
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        if let Err(violations) = catalogue.validate_envelope(&json) {
            panic!("events/examples/{name}: {violations:#?}");
        }
    }
}

#[test]
fn every_optional_field_is_shown_in_a_full_example() {
    // A `<type>.full.json` sets every property its data schema declares.
    let catalogue_dir = support::events_dir();
    for (name, _) in support::golden_files() {
        let Some(ty) = name.strip_suffix(".full.json") else {
            continue;
        };
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(catalogue_dir.join(format!("{ty}.schema.json"))).unwrap(),
        )
        .unwrap();
        let data = &example(&name)["data"];
        for property in schema["properties"].as_object().unwrap().keys() {
            assert!(data.get(property).is_some(), "{name}: {property} not set");
        }
    }
    // And each type with optional properties has one.
    for ty in EventType::ALL {
        let data_schema: Value = serde_json::from_str(Catalogue::data_schema(*ty)).unwrap();
        let properties = data_schema["properties"].as_object().unwrap().len();
        let required = data_schema["required"].as_array().map_or(0, Vec::len);
        if properties > required {
            let path = support::examples_dir().join(format!("{ty}.full.json"));
            assert!(
                path.exists(),
                "{ty} has optional fields but no {ty}.full.json"
            );
        }
    }
}

#[test]
fn extra_field_in_data_is_named() {
    let v = violations_of("client_token_issued.json", |j| {
        j["data"]["tokenStr"] = json!("eyJhbGciOi...");
    });
    check(&v, "/data/tokenStr", "not allowed");
}

#[test]
fn extra_field_in_a_nested_object_is_named() {
    let v = violations_of("access_token_registered.json", |j| {
        j["data"]["accessToken"]["plaintext"] = json!("ya29.secret");
    });
    check(&v, "/data/accessToken/plaintext", "not allowed");
}

#[test]
fn extra_field_in_the_envelope_is_named() {
    let v = violations_of("token_restored.json", |j| {
        j["tokenStr"] = json!("x");
    });
    check(&v, "/tokenStr", "not allowed");
}

#[test]
fn missing_required_field_is_named() {
    let v = violations_of("client_token_rotated.json", |j| {
        j["data"]["jwt"].as_object_mut().unwrap().remove("kid");
    });
    check(&v, "/data/jwt/kid", "missing");

    let v = violations_of("token_purged.json", |j| {
        j["data"].as_object_mut().unwrap().remove("forced");
    });
    check(&v, "/data/forced", "missing");

    let v = violations_of("token_purged.json", |j| {
        j.as_object_mut().unwrap().remove("hash");
    });
    check(&v, "/hash", "missing");
}

/// An example, how to spoil it, and where the schema must say so.
type Mutation = (&'static str, fn(&mut Value), &'static str);

/// Values the ledger never emits, in fields whose form it fixes: the
/// schema says so too, so a subscriber in another language can rely on it.
#[test]
fn fixed_forms_of_keys_algorithms_and_sources_are_checked() {
    let cases: [Mutation; 7] = [
        (
            "access_token_refreshed.json",
            |j| j["data"]["accessToken"]["alg"] = json!("none"),
            "/data/accessToken/alg",
        ),
        (
            "access_token_refreshed.json",
            |j| j["data"]["accessToken"]["keyId"] = json!("K1"),
            "/data/accessToken/keyId",
        ),
        (
            "access_token_refreshed.json",
            |j| j["data"]["accessToken"]["nonce"] = json!("AAAA"),
            "/data/accessToken/nonce",
        ),
        (
            "client_token_rotated.json",
            |j| j["data"]["jwt"]["kid"] = json!("K"),
            "/data/jwt/kid",
        ),
        (
            "client_token_rotated.json",
            |j| j["data"]["jwt"]["jti"] = json!("jti-1"),
            "/data/jwt/jti",
        ),
        (
            "client_token_rotated.json",
            |j| j["data"]["jwt"]["iat"] = json!(1_u64 << 60),
            "/data/jwt/iat",
        ),
        (
            "client_token_issued.full.json",
            |j| j["data"]["import"]["source"] = json!("elsewhere"),
            "/data/import/source",
        ),
    ];
    for (example, edit, path) in cases {
        let v = violations_of(example, edit);
        assert!(
            v.iter().any(|x| x.path == path),
            "{example}: no violation at {path}: {v:?}"
        );
    }
}

#[test]
fn wrong_type_is_named() {
    let v = violations_of("token_purged.json", |j| {
        j["data"]["forced"] = json!("yes");
    });
    check(&v, "/data/forced", "boolean");

    let v = violations_of("client_token_issued.full.json", |j| {
        j["data"]["expires"] = json!("2027-01-01");
    });
    check(&v, "/data/expires", "integer");

    let v = violations_of("token_restored.json", |j| {
        j["position"] = json!(-3);
    });
    check(&v, "/position", "minimum");
}

#[test]
fn plaintext_secret_is_rejected_without_echoing_it() {
    let v = violations_of("access_token_refreshed.json", |j| {
        j["data"]["accessToken"] = json!("ya29.a0AfH6SM-plaintext");
    });
    check(&v, "/data/accessToken", "object");
    for violation in &v {
        assert!(!violation.message.contains("ya29"), "{violation}");
    }
    // Nor does the decoder's error, which audit findings and subscribers'
    // warnings show.
    let mut json = example("access_token_refreshed.json");
    json["data"]["accessToken"] = json!("ya29.a0AfH6SM-plaintext");
    let err = ledger_core::Envelope::from_json(json.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid type: string"), "{err}");
    assert!(!err.contains("ya29"), "{err}");
}

#[test]
fn uppercase_uuid_is_rejected() {
    let v = violations_of("token_revoked.json", |j| {
        let id = j["eventId"].as_str().unwrap().to_uppercase();
        j["eventId"] = json!(id);
    });
    check(&v, "/eventId", "does not match");

    let v = violations_of("access_token_registered.json", |j| {
        let id = j["data"]["user"]["id"].as_str().unwrap().to_uppercase();
        j["data"]["user"]["id"] = json!(id);
    });
    check(&v, "/data/user/id", "does not match");
}

#[test]
fn bad_hash_is_rejected() {
    let v = violations_of("token_trashed.json", |j| {
        j["hash"] = json!("ABCDEF");
    });
    check(&v, "/hash", "does not match");

    let v = violations_of("token_trashed.json", |j| {
        let upper = j["prevHash"].as_str().unwrap().to_uppercase();
        j["prevHash"] = json!(upper);
    });
    check(&v, "/prevHash", "does not match");
}

#[test]
fn envelope_field_formats() {
    let v = violations_of("token_restored.json", |j| {
        j["occurredAt"] = json!("2026-01-15T09:00:00Z");
    });
    check(&v, "/occurredAt", "does not match");

    let v = violations_of("token_restored.json", |j| {
        j["occurredAt"] = json!("2026-01-15T09:00:00.000+01:00");
    });
    check(&v, "/occurredAt", "does not match");

    let v = violations_of("token_restored.json", |j| {
        j["workspaceId"] = json!("acme.corp");
    });
    check(&v, "/workspaceId", "does not match");

    let v = violations_of("token_restored.json", |j| {
        j["actor"]["agentType"] = json!("robot");
    });
    check(&v, "/actor/agentType", "is not one of");

    let v = violations_of("token_restored.json", |j| {
        j["type"] = json!("token_exploded");
    });
    check(&v, "/type", "is not one of");

    let v = violations_of("token_restored.json", |j| {
        j["schemaVersion"] = json!(2);
    });
    check(&v, "/schemaVersion", "is not one of");
}

#[test]
fn cross_field_rules_of_the_envelope() {
    // A client-token event on an access token.
    let v = violations_of("client_token_rotated.json", |j| {
        j["tokenKind"] = json!("access");
    });
    check(&v, "/tokenKind", "\"client\" was expected");

    // Creation is version 1, and only creation is.
    let v = violations_of("client_token_issued.json", |j| {
        j["version"] = json!(2);
    });
    check(&v, "/version", "1 was expected");
    let v = violations_of("token_revoked.json", |j| {
        j["version"] = json!(1);
    });
    check(&v, "/version", "minimum of 2");

    // Position 1 chains to the genesis hash, and nothing else does.
    let first = example("client_token_issued.json");
    assert_eq!(first["position"], 1);
    let v = violations_of("client_token_issued.json", |j| {
        j["prevHash"] = json!("1".repeat(64));
    });
    check(&v, "/prevHash", "was expected");
    let v = violations_of("token_revoked.json", |j| {
        j["prevHash"] = json!(GENESIS_HASH);
    });
    check(&v, "/prevHash", "is not allowed");
}

#[test]
fn data_rules() {
    // An update that changes nothing is not an event.
    let v = violations_of("client_token_updated.json", |j| j["data"] = json!({}));
    check(&v, "/data", "less than 1 property");

    // null clears name and expires, but never the group list.
    let v = violations_of("client_token_updated.full.json", |j| {
        j["data"]["permissionGroups"] = Value::Null;
    });
    check(&v, "/data/permissionGroups", "array");

    let v = violations_of("client_token_updated.full.json", |j| {
        j["data"]["name"] = json!("");
    });
    check(&v, "/data/name", "shorter");

    let v = violations_of("permission_groups_assigned.json", |j| {
        j["data"]["permissionGroups"] = json!([]);
    });
    check(&v, "/data/permissionGroups", "less than 1 item");

    let v = violations_of("permission_groups_unassigned.json", |j| {
        j["data"]["permissionGroupIds"] = json!([]);
    });
    check(&v, "/data/permissionGroupIds", "less than 1 item");

    let v = violations_of("access_token_refreshed.full.json", |j| {
        j["data"]["refreshToken"]["fingerprint"] = json!("fp:hunter2");
    });
    check(&v, "/data/refreshToken/fingerprint", "does not match");

    let v = violations_of("token_trashed.full.json", |j| {
        j["data"]["reason"] = json!("x".repeat(1001));
    });
    check(&v, "/data/reason", "longer than 1000");

    let v = violations_of("permission_groups_assigned.json", |j| {
        j["data"]["permissionGroups"][1]["assignedBy"]
            .as_object_mut()
            .unwrap()
            .remove("agentType");
    });
    check(
        &v,
        "/data/permissionGroups/1/assignedBy/agentType",
        "missing",
    );
}

#[test]
fn every_violation_is_reported() {
    let v = violations_of("client_token_issued.full.json", |j| {
        j["eventId"] = json!("not-a-uuid");
        j["data"]["name"] = json!(42);
        j["data"]["import"]["sourceVersion"] = json!(-1);
    });
    check(&v, "/eventId", "does not match");
    check(&v, "/data/name", "string");
    check(&v, "/data/import/sourceVersion", "minimum");
}

#[test]
fn not_an_envelope_at_all() {
    let catalogue = Catalogue::shared();
    let v = catalogue.validate_envelope(&json!([1, 2])).unwrap_err();
    check(&v, "", "object");
    let v = catalogue.validate_envelope(&json!({})).unwrap_err();
    check(&v, "/type", "missing");
    check(&v, "/data", "missing");
}

#[test]
fn validate_data_alone() {
    let catalogue = Catalogue::shared();
    assert!(catalogue
        .validate_data(EventType::TokenPurged, &json!({"forced": false}))
        .is_ok());
    let v = catalogue
        .validate_data(EventType::TokenPurged, &json!({"forced": false, "x": 1}))
        .unwrap_err();
    check(&v, "/x", "not allowed");
}

#[test]
fn violations_display_their_path() {
    let v = SchemaViolation {
        path: "/data/jwt/kid".into(),
        message: "required property \"kid\" is missing".into(),
    };
    assert_eq!(
        v.to_string(),
        "/data/jwt/kid: required property \"kid\" is missing"
    );
    let root = SchemaViolation {
        path: String::new(),
        message: "m".into(),
    };
    assert_eq!(root.to_string(), "/: m");
}

#[test]
fn load_builds_a_fresh_catalogue() {
    let catalogue = Catalogue::load();
    let json = example("token_restored.json");
    assert_eq!(catalogue.validate_envelope(&json), Ok(()));
}

#[test]
fn schema_limits_follow_the_core() {
    use ledger_core::validate::*;
    let defs: Value = serde_json::from_str(ledger_catalogue::DEFS_SCHEMA).unwrap();
    let max_length = |def: &str| defs["$defs"][def]["maxLength"].as_u64();
    let as_u64 = |n: usize| Some(n as u64);
    assert_eq!(max_length("name"), as_u64(NAME_LEN_MAX));
    assert_eq!(
        max_length("providedResourceId"),
        as_u64(PROVIDED_ID_LEN_MAX)
    );
    assert_eq!(
        max_length("permissionGroupId"),
        as_u64(PERMISSION_GROUP_ID_LEN_MAX)
    );
    assert_eq!(max_length("provider"), as_u64(PROVIDER_LEN_MAX));
    assert_eq!(max_length("accountName"), as_u64(ACCOUNT_NAME_LEN_MAX));
    assert_eq!(max_length("reason"), as_u64(REASON_LEN_MAX));
    assert_eq!(
        defs["$defs"]["agent"]["properties"]["agentId"]["maxLength"].as_u64(),
        as_u64(AGENT_ID_LEN_MAX)
    );
    assert_eq!(
        defs["$defs"]["assignedPermissionGroups"]["maxItems"].as_u64(),
        as_u64(PERMISSION_GROUPS_MAX)
    );
    let envelope: Value = serde_json::from_str(ledger_catalogue::ENVELOPE_SCHEMA).unwrap();
    assert_eq!(
        envelope["properties"]["correlationId"]["maxLength"].as_u64(),
        as_u64(AGENT_ID_LEN_MAX)
    );
    assert_eq!(
        envelope["properties"]["workspaceId"]["pattern"],
        format!("^[A-Za-z0-9_-]{{1,{WORKSPACE_ID_LEN_MAX}}}$")
    );
    let updated: Value =
        serde_json::from_str(Catalogue::data_schema(EventType::ClientTokenUpdated)).unwrap();
    assert_eq!(
        updated["properties"]["name"]["maxLength"].as_u64(),
        as_u64(NAME_LEN_MAX)
    );
    let unassigned: Value = serde_json::from_str(Catalogue::data_schema(
        EventType::PermissionGroupsUnassigned,
    ))
    .unwrap();
    assert_eq!(
        unassigned["properties"]["permissionGroupIds"]["maxItems"].as_u64(),
        as_u64(PERMISSION_GROUPS_MAX)
    );
}

/// Every value at every path of `json`, each replaced by each of a few
/// others (`null`, wrong types, empty and odd strings, numbers at the edges).
fn mutations(json: &serde_json::Value) -> Vec<serde_json::Value> {
    fn paths(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    paths(x, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    paths(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(json, String::new(), &mut all);
    let others = [
        serde_json::json!(null),
        serde_json::json!(""),
        serde_json::json!("x"),
        serde_json::json!("client"),
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1),
        serde_json::json!(2),
        serde_json::json!(true),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!({"zz": 1}),
    ];
    let mut out = Vec::new();
    for path in all.iter().skip(1) {
        for other in &others {
            let mut m = json.clone();
            *m.pointer_mut(path).unwrap() = other.clone();
            out.push(m);
        }
        let (parent, _) = path.rsplit_once('/').unwrap();
        let mut m = json.clone();
        if let Some(serde_json::Value::Object(o)) = m.pointer_mut(parent) {
            o.remove(path.rsplit_once('/').unwrap().1);
            out.push(m);
        }
    }
    out
}

#[test]
fn the_fast_path_agrees_with_the_value_path_on_examples_and_their_mutations() {
    let catalogue = Catalogue::shared();
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/examples"
    ))
    .unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if json.get("eventId").is_none() {
            continue;
        }
        for candidate in std::iter::once(json.clone()).chain(mutations(&json)) {
            // Compact, keys sorted: the form the fast path reads.
            let bytes = serde_json::to_vec(&candidate).unwrap();
            let full = catalogue.validate_envelope(&candidate).is_ok();
            assert_eq!(
                catalogue.check_fast(&bytes),
                Some(full),
                "{}: {candidate}",
                path.display()
            );
            assert_eq!(catalogue.validate_published(&bytes).is_ok(), full);
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
}
