//! Every business rule and every rejection code the core can answer,
//! written as given / when / then.

mod support;

use ledger_core::command::{
    self, Command, CommandEnvelope, CommandName, ImportOrigin, ImportedClientFields,
    READ_ONLY_FIELDS,
};
use ledger_core::event::{AssignedPermissionGroup, EventData, EventType as E};
use ledger_core::state::TokenBody;
use ledger_core::validate::COMMAND_BYTES_MAX;
use ledger_core::{Agent, AgentType, ErrorCode, Timestamp};
use serde_json::{json, Value};
use std::collections::HashSet;
use support::*;
use uuid::Uuid;

const UNKNOWN: &str = "0b7c7f0e-58b8-4c4e-9d0e-2d1a3c4b5a69";

fn groups(ids: &[&str]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| json!({ "permissionGroupId": id }))
            .collect(),
    )
}

fn group_ids(s: &Scenario, token: Uuid) -> Vec<String> {
    match &s.token(token).body {
        TokenBody::Client {
            permission_groups, ..
        } => permission_groups
            .iter()
            .map(|g| g.permission_group_id.clone())
            .collect(),
        TokenBody::Access { .. } => panic!("not a client token"),
    }
}

fn assigned(s: &Scenario, token: Uuid) -> Vec<AssignedPermissionGroup> {
    match &s.token(token).body {
        TokenBody::Client {
            permission_groups, ..
        } => permission_groups.clone(),
        TokenBody::Access { .. } => panic!("not a client token"),
    }
}

/// A client token and an access token, side by side.
fn two_kinds(s: &mut Scenario) -> (Uuid, Uuid) {
    let client = s.issue(json!({ "name": "client", "permissionGroups": groups(&["g-1"]) }));
    let access = s.register(user(1), "google", "me@example.com");
    (client, access)
}

/// Minimal valid extra fields for each command that names a token.
fn targeted(name: CommandName) -> Value {
    match name {
        CommandName::UpdateClientToken => json!({ "name": "renamed" }),
        CommandName::AssignPermissionGroups => json!({ "permissionGroups": groups(&["g-2"]) }),
        CommandName::UnassignPermissionGroups => json!({ "permissionGroups": groups(&["g-1"]) }),
        CommandName::RefreshAccessToken => json!({ "accessToken": "at-2" }),
        CommandName::UpdateAccessToken => json!({ "accountName": "other@example.com" }),
        CommandName::PurgeToken => json!({ "force": true }),
        _ => json!({}),
    }
}

/// The commands that name an existing token by `tokenId`.
fn targeting_commands() -> Vec<CommandName> {
    CommandName::ALL
        .into_iter()
        .filter(|c| {
            !matches!(
                c,
                CommandName::IssueClientToken | CommandName::RegisterAccessToken
            )
        })
        .collect()
}

fn client_only(name: CommandName) -> bool {
    matches!(
        name,
        CommandName::UpdateClientToken
            | CommandName::AssignPermissionGroups
            | CommandName::UnassignPermissionGroups
            | CommandName::RotateClientToken
    )
}

fn access_only(name: CommandName) -> bool {
    matches!(
        name,
        CommandName::RefreshAccessToken | CommandName::UpdateAccessToken
    )
}

/// A valid body for every command, targeting `client` or `access` as fits.
fn valid_body(name: CommandName, client: Uuid, access: Uuid) -> Value {
    let mut body = match name {
        CommandName::IssueClientToken => json!({ "name": "fresh" }),
        CommandName::RegisterAccessToken => json!({
            "user": { "id": user(9).to_string() },
            "provider": "google",
            "accountName": "fresh@example.com",
            "accessToken": "at",
        }),
        other => targeted(other),
    };
    if !matches!(
        name,
        CommandName::IssueClientToken | CommandName::RegisterAccessToken
    ) {
        let target = if access_only(name) { access } else { client };
        body["tokenId"] = json!(target.to_string());
    }
    body
}

// ---------------------------------------------------------------------------
// Versions

#[test]
fn client_token_versions_start_at_1_and_grow_by_1_per_event() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "name": "v", "permissionGroups": groups(&["g-1"]) }));
    assert_eq!(s.token(id).version, 1);
    assert_eq!(s.log[0].version, 1);

    let steps: [(&str, Value, E); 8] = [
        (
            "update_client_token",
            json!({ "name": "v2" }),
            E::ClientTokenUpdated,
        ),
        (
            "assign_permission_groups",
            json!({ "permissionGroups": groups(&["g-2"]) }),
            E::PermissionGroupsAssigned,
        ),
        (
            "unassign_permission_groups",
            json!({ "permissionGroups": groups(&["g-1"]) }),
            E::PermissionGroupsUnassigned,
        ),
        ("rotate_client_token", json!({}), E::ClientTokenRotated),
        ("trash_token", json!({}), E::TokenTrashed),
        ("restore_token", json!({}), E::TokenRestored),
        ("revoke_token", json!({}), E::TokenRevoked),
        ("purge_token", json!({ "force": true }), E::TokenPurged),
    ];
    for (i, (name, extra, ty)) in steps.into_iter().enumerate() {
        let expected = i as u64 + 2;
        let out = s.on(name, id, extra);
        out.then_events(&[ty]);
        assert_eq!(out.events[0].version, expected, "{name}");
        assert_eq!(s.token(id).version, expected, "{name}");
    }
    let versions: Vec<u64> = s.history(id).iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=9).collect::<Vec<_>>());
}

#[test]
fn access_token_versions_start_at_1_and_grow_by_1_per_event() {
    let mut s = Scenario::new();
    let id = s.register(user(1), "google", "me@example.com");
    assert_eq!(s.token(id).version, 1);
    s.on("refresh_access_token", id, json!({ "accessToken": "at-2" }))
        .then_events(&[E::AccessTokenRefreshed]);
    s.on("update_access_token", id, json!({ "provider": "github" }))
        .then_events(&[E::AccessTokenUpdated]);
    s.on("trash_token", id, json!({}))
        .then_events(&[E::TokenTrashed]);
    s.on("purge_token", id, json!({}))
        .then_events(&[E::TokenPurged]);
    let versions: Vec<u64> = s.history(id).iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(s.token(id).version, 5);
}

#[test]
fn positions_are_global_and_hashes_chain() {
    let mut s = Scenario::new();
    let a = s.issue_named("a");
    let b = s.register(user(1), "google", "me@example.com");
    s.on("trash_token", a, json!({}));
    s.on("revoke_token", b, json!({}));
    let positions: Vec<u64> = s.log.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(s.log[0].prev_hash, ledger_core::event::GENESIS_HASH);
    for w in s.log.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    assert_eq!(s.state.position, 4);
    assert_eq!(s.replayed(), s.state);
}

// ---------------------------------------------------------------------------
// expectedVersion

#[test]
fn expected_version_mismatch_is_a_conflict_with_the_current_version() {
    for name in targeting_commands() {
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        s.on("rotate_client_token", client, json!({}));
        s.on(
            "refresh_access_token",
            access,
            json!({ "accessToken": "at-2" }),
        );
        let mut body = valid_body(name, client, access);
        body["expectedVersion"] = json!(7);
        let rejection = s
            .when(name.as_str(), body)
            .then_err(ErrorCode::Conflict, Some("expectedVersion"))
            .clone();
        assert_eq!(rejection.current_version, Some(2), "{name}");
    }
}

#[test]
fn expected_version_match_is_accepted() {
    for name in targeting_commands() {
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        let mut expected = 1;
        if name == CommandName::RestoreToken {
            s.on("trash_token", client, json!({}));
            expected = 2;
        }
        let mut body = valid_body(name, client, access);
        body["expectedVersion"] = json!(expected);
        let out = s.when(name.as_str(), body);
        assert_eq!(out.events.len(), 1, "{name}: {:?}", out.result);
        assert_eq!(out.events[0].version, expected + 1);
    }
}

#[test]
fn creation_commands_accept_only_expected_version_0() {
    for name in [
        CommandName::IssueClientToken,
        CommandName::RegisterAccessToken,
    ] {
        let mut s = Scenario::new();
        let mut body = valid_body(name, Uuid::nil(), Uuid::nil());
        body["expectedVersion"] = json!(1);
        let r = s
            .when(name.as_str(), body.clone())
            .then_err(ErrorCode::Conflict, Some("expectedVersion"))
            .clone();
        assert_eq!(r.current_version, Some(0));
        body["expectedVersion"] = json!(0);
        let out = s.when(name.as_str(), body);
        assert_eq!(out.events.len(), 1, "{name}");
        assert_eq!(out.events[0].version, 1);
    }
}

#[test]
fn register_with_an_existing_id_is_a_conflict_with_that_tokens_version() {
    let mut s = Scenario::new();
    let id = s.register(user(1), "google", "me@example.com");
    s.on("refresh_access_token", id, json!({ "accessToken": "at-2" }));
    let body = json!({
        "id": id.to_string(),
        "user": { "id": user(2).to_string() },
        "provider": "github",
        "accountName": "x",
        "accessToken": "at",
    });
    let r = s
        .when("register_access_token", body.clone())
        .then_err(ErrorCode::Conflict, Some("id"))
        .clone();
    assert_eq!(r.current_version, Some(2));
    // Also when the caller's expectedVersion is off: the version reported is
    // the existing token's, not 0.
    let mut with_version = body.clone();
    with_version["expectedVersion"] = json!(5);
    let r = s
        .when("register_access_token", with_version)
        .then_err(ErrorCode::Conflict, Some("id"))
        .clone();
    assert_eq!(r.current_version, Some(2));
    // From another workspace the id is only taken: no version, no history.
    let mut foreign = body.clone();
    foreign["workspaceId"] = json!("other-ws");
    let r = s
        .when("register_access_token", foreign)
        .then_err(ErrorCode::Conflict, Some("id"))
        .clone();
    assert_eq!(r.current_version, None);
    assert!(r.message.contains("taken"), "{}", r.message);
    // A purged token's id stays taken: ids are never reused.
    s.on("purge_token", id, json!({ "force": true }));
    let r = s
        .when("register_access_token", body)
        .then_err(ErrorCode::Conflict, Some("id"))
        .clone();
    assert_eq!(r.current_version, Some(3));
}

#[test]
fn register_with_a_chosen_id_uses_it() {
    let mut s = Scenario::new();
    let id = Uuid::parse_str(UNKNOWN).unwrap();
    let got = s.given(
        "register_access_token",
        json!({
            "id": UNKNOWN,
            "user": { "id": user(1).to_string() },
            "provider": "google",
            "accountName": "me@example.com",
            "accessToken": "at",
        }),
    );
    assert_eq!(got, id);
    assert_eq!(s.view(id).unwrap().id, Some(id));
}

// ---------------------------------------------------------------------------
// Names

#[test]
fn names_are_unique_per_workspace_case_insensitively() {
    let mut s = Scenario::new();
    s.issue_named("MyToken");
    s.when("issue_client_token", json!({ "name": "mytoken" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
    s.when("issue_client_token", json!({ "name": "MYTOKEN" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
    s.when("issue_client_token", json!({ "name": "MyToken" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
    s.when("issue_client_token", json!({ "name": "MyToken2" }))
        .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn names_collide_under_unicode_case_folding() {
    let mut s = Scenario::new();
    s.issue_named("STRASSE");
    s.when("issue_client_token", json!({ "name": "straße" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
    s.issue_named("σίσυφος");
    s.when("issue_client_token", json!({ "name": "ΣΊΣΥΦΟΣ" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
}

/// Names that look alike must compare alike: composed and decomposed forms,
/// surrounding spaces and invisible characters would each make a second
/// "Café" that no one can tell from the first. Such names are refused.
#[test]
fn a_name_that_would_look_like_another_is_refused() {
    let mut s = Scenario::new();
    let id = s.issue_named("Café");
    s.when("issue_client_token", json!({ "name": "CAFÉ" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
    let lookalikes = [
        ("Cafe\u{301}", "normalization form C"),
        (" Café", "whitespace"),
        ("Café ", "whitespace"),
        ("Ca\u{200b}fé", "U+200B"),
        ("abc\u{202e}dcba", "U+202E"),
        ("\u{feff}Café", "U+FEFF"),
        ("Caf\u{e9}\u{a0}2", "U+00A0"),
        ("a\u{200d}b", "U+200D"),
        ("a\u{2028}b", "U+2028"),
        ("\u{3164}", "U+3164"),
        ("Café\u{3164}", "U+3164"),
        ("\u{2800}x", "U+2800"),
    ];
    for (name, why) in lookalikes {
        let r = s
            .when("issue_client_token", json!({ "name": name }))
            .then_err(ErrorCode::InvalidInput, Some("name"))
            .clone();
        assert!(r.message.contains(why), "{name:?}: {}", r.message);
        s.when(
            "update_client_token",
            json!({ "tokenId": id.to_string(), "name": name }),
        )
        .then_err(ErrorCode::InvalidInput, Some("name"));
        let r = s
            .when(
                "register_access_token",
                json!({
                    "user": { "id": user(1).to_string() },
                    "provider": "google",
                    "accountName": name,
                    "accessToken": "at",
                }),
            )
            .then_err(ErrorCode::InvalidInput, Some("accountName"))
            .clone();
        assert!(r.message.contains(why), "{name:?}: {}", r.message);
    }
    // Inner spaces and other scripts are fine, and a joiner after a virama
    // (Devanagari "क्‍ष").
    s.issue_named("my token");
    s.issue_named("σίσυφος 2");
    s.issue_named("\u{915}\u{94d}\u{200d}\u{937}");
}

#[test]
fn the_same_name_is_free_in_another_workspace() {
    let mut s = Scenario::new();
    s.issue_named("MyToken");
    s.when(
        "issue_client_token",
        json!({ "name": "mytoken", "workspaceId": OTHER_WS }),
    )
    .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn a_token_may_be_renamed_to_another_spelling_of_its_own_name() {
    let mut s = Scenario::new();
    let id = s.issue_named("MyToken");
    let out = s.on("update_client_token", id, json!({ "name": "MYTOKEN" }));
    out.then_events(&[E::ClientTokenUpdated]);
    assert_eq!(out.data_json(), json!({ "name": "MYTOKEN" }));
    assert_eq!(s.view(id).unwrap().name.as_deref(), Some("MYTOKEN"));
    // Still holds the folded key.
    s.when("issue_client_token", json!({ "name": "mytoken" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
}

#[test]
fn renaming_to_the_exact_same_name_appends_nothing() {
    let mut s = Scenario::new();
    let id = s.issue_named("MyToken");
    s.on("update_client_token", id, json!({ "name": "MyToken" }))
        .then_nothing();
}

#[test]
fn renaming_onto_another_tokens_name_is_refused() {
    let mut s = Scenario::new();
    s.issue_named("Alpha");
    let b = s.issue_named("Beta");
    s.on("update_client_token", b, json!({ "name": "ALPHA" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
}

#[test]
fn a_rename_frees_the_old_name_and_clearing_frees_it_too() {
    let mut s = Scenario::new();
    let a = s.issue_named("Alpha");
    s.on("update_client_token", a, json!({ "name": "Gamma" }))
        .then_events(&[E::ClientTokenUpdated]);
    s.when("issue_client_token", json!({ "name": "alpha" }))
        .then_events(&[E::ClientTokenIssued]);
    let out = s.on("update_client_token", a, json!({ "name": null }));
    out.then_events(&[E::ClientTokenUpdated]);
    assert_eq!(out.data_json(), json!({ "name": null }));
    assert_eq!(s.view(a).unwrap().name, None);
    s.when("issue_client_token", json!({ "name": "GAMMA" }))
        .then_events(&[E::ClientTokenIssued]);
    // Clearing an absent name is a no-op.
    s.on("update_client_token", a, json!({ "name": null }))
        .then_nothing();
}

#[test]
fn trashed_and_revoked_tokens_keep_their_name_and_purge_frees_it() {
    let mut s = Scenario::new();
    let trashed = s.issue_named("Trashed");
    let revoked = s.issue_named("Revoked");
    s.on("trash_token", trashed, json!({}))
        .then_events(&[E::TokenTrashed]);
    s.on("revoke_token", revoked, json!({}))
        .then_events(&[E::TokenRevoked]);
    s.when("issue_client_token", json!({ "name": "trashed" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
    s.when("issue_client_token", json!({ "name": "revoked" }))
        .then_err(ErrorCode::NameTaken, Some("name"));

    s.on("purge_token", trashed, json!({}))
        .then_events(&[E::TokenPurged]);
    s.on("purge_token", revoked, json!({ "force": true }))
        .then_events(&[E::TokenPurged]);
    s.when("issue_client_token", json!({ "name": "trashed" }))
        .then_events(&[E::ClientTokenIssued]);
    s.when("issue_client_token", json!({ "name": "REVOKED" }))
        .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn a_restored_token_gets_its_name_back() {
    let mut s = Scenario::new();
    let id = s.issue_named("Keep");
    s.on("trash_token", id, json!({}));
    s.on("restore_token", id, json!({}))
        .then_events(&[E::TokenRestored]);
    assert_eq!(s.view(id).unwrap().name.as_deref(), Some("Keep"));
    s.when("issue_client_token", json!({ "name": "keep" }))
        .then_err(ErrorCode::NameTaken, Some("name"));
}

// ---------------------------------------------------------------------------
// providedResourceId

#[test]
fn reissuing_with_the_same_provided_id_and_nothing_different_returns_the_token() {
    let mut s = Scenario::new();
    let body = json!({
        "name": "Mine",
        "providedResourceId": "user-42",
        "expires": T0_MS + 86_400_000,
        "permissionGroups": groups(&["g-1", "g-2"]),
    });
    let id = s.issue(body.clone());
    let out = s.when("issue_client_token", body);
    out.then_nothing();
    assert_eq!(out.decision().token_id, id);
    // Fields not given are not "different".
    let out = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42" }),
    );
    out.then_nothing();
    assert_eq!(out.decision().token_id, id);
}

#[test]
fn reissuing_with_differences_updates_only_the_changed_fields() {
    let mut s = Scenario::new();
    let id = s.issue(json!({
        "name": "Mine",
        "providedResourceId": "user-42",
        "expires": T0_MS + 86_400_000,
        "permissionGroups": groups(&["g-1"]),
    }));

    let out = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42", "name": "Mine v2", "expires": T0_MS + 86_400_000 }),
    );
    out.then_events(&[E::ClientTokenUpdated]);
    assert_eq!(out.decision().token_id, id);
    assert_eq!(out.data_json(), json!({ "name": "Mine v2" }));

    let out = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42", "expires": T0_MS + 2 * 86_400_000 }),
    );
    assert_eq!(
        out.data_json(),
        json!({ "expires": T0_MS + 2 * 86_400_000 })
    );

    let out = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42", "permissionGroups": groups(&["g-1", "g-3"]) }),
    );
    let data = out.data_json();
    assert_eq!(data.as_object().unwrap().len(), 1, "{data}");
    let ids: Vec<&str> = data["permissionGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["permissionGroupId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g-1", "g-3"]);
    assert_eq!(s.token(id).version, 4);

    // An empty list is a list: it replaces the groups, as in an update.
    let out = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42", "permissionGroups": [] }),
    );
    out.then_events(&[E::ClientTokenUpdated]);
    assert_eq!(out.data_json(), json!({ "permissionGroups": [] }));
    assert!(group_ids(&s, id).is_empty());
    assert_eq!(s.created, [id], "no second token was created");
}

#[test]
fn reissue_with_if_exists_fail_is_provided_id_taken() {
    let mut s = Scenario::new();
    s.issue(json!({ "providedResourceId": "user-42" }));
    s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42", "ifExists": "fail" }),
    )
    .then_err(ErrorCode::ProvidedIdTaken, Some("providedResourceId"));
    // "reuse" is the default, and may be said explicitly.
    s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-42", "ifExists": "reuse" }),
    )
    .then_nothing();
    // A fresh provided id with "fail" issues normally.
    s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-43", "ifExists": "fail" }),
    )
    .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn the_provided_id_is_looked_up_before_the_name() {
    let mut s = Scenario::new();
    let a = s.issue(json!({ "name": "Alpha", "providedResourceId": "p-a" }));
    s.issue(json!({ "name": "Beta", "providedResourceId": "p-b" }));
    // Alpha's own name is not "taken" when re-issuing Alpha by its provided id.
    let out = s.when(
        "issue_client_token",
        json!({ "name": "Alpha", "providedResourceId": "p-a" }),
    );
    out.then_nothing();
    assert_eq!(out.decision().token_id, a);
    // Another spelling is a rename of Alpha, not a collision.
    s.when(
        "issue_client_token",
        json!({ "name": "ALPHA", "providedResourceId": "p-a" }),
    )
    .then_events(&[E::ClientTokenUpdated]);
    // Beta's name is another token's: the update that reuse implies is refused.
    s.when(
        "issue_client_token",
        json!({ "name": "beta", "providedResourceId": "p-a" }),
    )
    .then_err(ErrorCode::NameTaken, Some("name"));
}

#[test]
fn provided_ids_are_per_workspace_and_compared_exactly() {
    let mut s = Scenario::new();
    let a = s.issue(json!({ "providedResourceId": "User-1" }));
    let other = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "User-1", "workspaceId": OTHER_WS }),
    );
    other.then_events(&[E::ClientTokenIssued]);
    assert_ne!(other.decision().token_id, a);
    let other_case = s.when(
        "issue_client_token",
        json!({ "providedResourceId": "user-1" }),
    );
    other_case.then_events(&[E::ClientTokenIssued]);
    assert_ne!(other_case.decision().token_id, a);
}

#[test]
fn reissue_of_a_trashed_or_revoked_token_is_refused() {
    let mut s = Scenario::new();
    let t = s.issue(json!({ "providedResourceId": "p-t" }));
    let r = s.issue(json!({ "providedResourceId": "p-r" }));
    s.on("trash_token", t, json!({}));
    s.on("revoke_token", r, json!({}));
    s.when("issue_client_token", json!({ "providedResourceId": "p-t" }))
        .then_err(ErrorCode::Trashed, Some("providedResourceId"));
    s.when("issue_client_token", json!({ "providedResourceId": "p-r" }))
        .then_err(ErrorCode::Revoked, Some("providedResourceId"));
    // With "fail" the answer is the same whatever the holder's state.
    s.when(
        "issue_client_token",
        json!({ "providedResourceId": "p-t", "ifExists": "fail" }),
    )
    .then_err(ErrorCode::ProvidedIdTaken, Some("providedResourceId"));
}

#[test]
fn purge_frees_the_provided_id() {
    let mut s = Scenario::new();
    let old = s.issue(json!({ "providedResourceId": "p-1" }));
    s.on("purge_token", old, json!({ "force": true }));
    let out = s.when("issue_client_token", json!({ "providedResourceId": "p-1" }));
    out.then_events(&[E::ClientTokenIssued]);
    assert_ne!(out.decision().token_id, old);
}

#[test]
fn reuse_checks_expected_version_against_the_existing_token() {
    let mut s = Scenario::new();
    s.issue(json!({ "providedResourceId": "p-1" }));
    let r = s
        .when(
            "issue_client_token",
            json!({ "providedResourceId": "p-1", "expectedVersion": 0 }),
        )
        .then_err(ErrorCode::Conflict, Some("expectedVersion"))
        .clone();
    assert_eq!(r.current_version, Some(1));
    s.when(
        "issue_client_token",
        json!({ "providedResourceId": "p-1", "expectedVersion": 1, "name": "n" }),
    )
    .then_events(&[E::ClientTokenUpdated]);
}

// ---------------------------------------------------------------------------
// Access tokens: one live token per user, provider and account

#[test]
fn a_second_live_token_for_the_same_account_is_account_taken() {
    let mut s = Scenario::new();
    s.register(user(1), "google", "Me@Example.com");
    let second = json!({
        "user": { "id": user(1).to_string() },
        "provider": "Google",
        "accountName": "me@example.COM",
        "accessToken": "at-2",
    });
    s.when("register_access_token", second)
        .then_err(ErrorCode::AccountTaken, Some("accountName"));
}

#[test]
fn the_account_rule_is_per_user_provider_and_workspace() {
    let mut s = Scenario::new();
    s.register(user(1), "google", "me@example.com");
    s.register(user(2), "google", "me@example.com");
    s.register(user(1), "github", "me@example.com");
    s.register(user(1), "google", "you@example.com");
    s.when(
        "register_access_token",
        json!({
            "workspaceId": OTHER_WS,
            "user": { "id": user(1).to_string() },
            "provider": "google",
            "accountName": "me@example.com",
            "accessToken": "at",
        }),
    )
    .then_events(&[E::AccessTokenRegistered]);
}

#[test]
fn the_account_is_free_again_once_the_first_is_trashed_or_revoked() {
    for ender in ["trash_token", "revoke_token"] {
        let mut s = Scenario::new();
        let first = s.register(user(1), "google", "me@example.com");
        s.on(ender, first, json!({}));
        let second = s.register(user(1), "google", "ME@example.com");
        assert_ne!(first, second);
        if ender == "trash_token" {
            s.on("restore_token", first, json!({}))
                .then_err(ErrorCode::AccountTaken, Some("accountName"));
            // Once the second goes, the first may come back.
            s.on("trash_token", second, json!({}));
            s.on("restore_token", first, json!({}))
                .then_events(&[E::TokenRestored]);
        } else {
            s.on("restore_token", first, json!({}))
                .then_err(ErrorCode::NotTrashed, Some("tokenId"));
        }
    }
}

#[test]
fn updating_onto_a_taken_account_is_refused() {
    let mut s = Scenario::new();
    s.register(user(1), "google", "a@example.com");
    let b = s.register(user(1), "google", "b@example.com");
    s.on(
        "update_access_token",
        b,
        json!({ "accountName": "A@example.com" }),
    )
    .then_err(ErrorCode::AccountTaken, Some("accountName"));
    let c = s.register(user(1), "github", "a@example.com");
    s.on("update_access_token", c, json!({ "provider": "GOOGLE" }))
        .then_err(ErrorCode::AccountTaken, Some("accountName"));
}

#[test]
fn update_access_token_carries_only_changed_fields() {
    let mut s = Scenario::new();
    let id = s.register(user(1), "google", "me@example.com");
    s.on(
        "update_access_token",
        id,
        json!({ "accountName": "me@example.com", "provider": "google" }),
    )
    .then_nothing();
    let out = s.on(
        "update_access_token",
        id,
        json!({ "accountName": "Me@Example.com", "provider": "google" }),
    );
    out.then_events(&[E::AccessTokenUpdated]);
    assert_eq!(out.data_json(), json!({ "accountName": "Me@Example.com" }));
    let out = s.on("update_access_token", id, json!({ "provider": "github" }));
    assert_eq!(out.data_json(), json!({ "provider": "github" }));
    let view = s.view(id).unwrap();
    assert_eq!(view.provider.as_deref(), Some("github"));
    assert_eq!(view.account_name.as_deref(), Some("Me@Example.com"));
    assert_eq!(view.display_name.as_deref(), Some("Me@Example.com"));
}

#[test]
fn refresh_replaces_secrets_and_keeps_an_unsent_refresh_token() {
    let mut s = Scenario::new();
    let id = s.register(user(1), "google", "me@example.com");
    let view = s.view(id).unwrap();
    assert_eq!(view.access_token_fingerprint.as_deref(), Some("fp:at-1"));
    assert_eq!(view.refresh_token_fingerprint.as_deref(), Some("fp:rt-1"));

    let out = s.on("refresh_access_token", id, json!({ "accessToken": "at-2" }));
    out.then_events(&[E::AccessTokenRefreshed]);
    assert!(out.data_json().get("refreshToken").is_none());
    let view = s.view(id).unwrap();
    assert_eq!(view.access_token_fingerprint.as_deref(), Some("fp:at-2"));
    assert_eq!(view.refresh_token_fingerprint.as_deref(), Some("fp:rt-1"));

    s.on(
        "refresh_access_token",
        id,
        json!({ "accessToken": "at-3", "refreshToken": "rt-3" }),
    )
    .then_events(&[E::AccessTokenRefreshed]);
    let view = s.view(id).unwrap();
    assert_eq!(view.refresh_token_fingerprint.as_deref(), Some("fp:rt-3"));
    // Plaintext never reaches an event or a view.
    for e in &s.log {
        let text = String::from_utf8(e.to_json_bytes()).unwrap();
        assert!(!text.contains("\"at-"), "{text}");
    }
    assert_eq!(view.access_token, None);
}

// ---------------------------------------------------------------------------
// Trash, restore, revoke, purge

#[test]
fn trash_records_who_when_and_why_and_restore_clears_it() {
    let mut s = Scenario::new();
    let id = s.issue_named("t");
    let out = s.on("trash_token", id, json!({ "reason": "leaked" }));
    out.then_events(&[E::TokenTrashed]);
    let item = s.view(id).unwrap().trash_item.unwrap();
    assert_eq!(item.reason.as_deref(), Some("leaked"));
    assert_eq!(item.trashed_at, s.now());
    assert_eq!(
        item.trashed_by,
        Agent {
            agent_id: "user-1".into(),
            agent_type: AgentType::User
        }
    );
    assert!(!s.token(id).is_live());
    s.on("restore_token", id, json!({}))
        .then_events(&[E::TokenRestored]);
    assert_eq!(s.view(id).unwrap().trash_item, None);
    assert!(s.token(id).is_live());
}

#[test]
fn trash_twice_is_trashed() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        s.on("trash_token", id, json!({}));
        s.on("trash_token", id, json!({}))
            .then_err(ErrorCode::Trashed, Some("tokenId"));
    }
}

#[test]
fn restore_of_a_token_not_in_the_trash_is_not_trashed() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        s.on("restore_token", id, json!({}))
            .then_err(ErrorCode::NotTrashed, Some("tokenId"));
    }
}

#[test]
fn restore_of_a_revoked_token_is_revoked() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    // Revoked then trashed, and trashed then revoked.
    s.on("revoke_token", client, json!({}));
    s.on("trash_token", client, json!({}))
        .then_events(&[E::TokenTrashed]);
    s.on("trash_token", access, json!({}));
    s.on("revoke_token", access, json!({}))
        .then_events(&[E::TokenRevoked]);
    for id in [client, access] {
        s.on("restore_token", id, json!({}))
            .then_err(ErrorCode::Revoked, Some("tokenId"));
    }
}

#[test]
fn revoke_is_final_and_recorded() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        s.on("revoke_token", id, json!({ "reason": "compromised" }))
            .then_events(&[E::TokenRevoked]);
        let view = s.view(id).unwrap();
        assert!(view.revoked);
        let revocation = view.revocation.unwrap();
        assert_eq!(revocation.reason.as_deref(), Some("compromised"));
        assert_eq!(revocation.revoked_at, s.now());
        s.on("revoke_token", id, json!({}))
            .then_err(ErrorCode::Revoked, Some("tokenId"));
    }
}

#[test]
fn changes_to_a_trashed_token_are_trashed() {
    for name in targeting_commands() {
        if matches!(
            name,
            CommandName::TrashToken
                | CommandName::RestoreToken
                | CommandName::RevokeToken
                | CommandName::PurgeToken
        ) {
            continue;
        }
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        s.on("trash_token", client, json!({}));
        s.on("trash_token", access, json!({}));
        s.when(name.as_str(), valid_body(name, client, access))
            .then_err(ErrorCode::Trashed, Some("tokenId"));
    }
}

#[test]
fn changes_to_a_revoked_token_are_revoked() {
    for name in targeting_commands() {
        if matches!(
            name,
            CommandName::TrashToken | CommandName::RestoreToken | CommandName::PurgeToken
        ) {
            continue;
        }
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        s.on("revoke_token", client, json!({}));
        s.on("revoke_token", access, json!({}));
        s.when(name.as_str(), valid_body(name, client, access))
            .then_err(ErrorCode::Revoked, Some("tokenId"));
    }
}

#[test]
fn revoked_tokens_can_still_be_trashed_and_purged() {
    let mut s = Scenario::new();
    let id = s.issue_named("r");
    s.on("revoke_token", id, json!({}));
    s.on("trash_token", id, json!({}))
        .then_events(&[E::TokenTrashed]);
    s.on("purge_token", id, json!({}))
        .then_events(&[E::TokenPurged]);
}

#[test]
fn purge_of_a_token_not_in_the_trash_is_not_trashed_unless_forced() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        s.on("purge_token", id, json!({}))
            .then_err(ErrorCode::NotTrashed, Some("tokenId"));
        s.on("purge_token", id, json!({ "force": false }))
            .then_err(ErrorCode::NotTrashed, Some("tokenId"));
        let out = s.on("purge_token", id, json!({ "force": true }));
        out.then_events(&[E::TokenPurged]);
        assert_eq!(out.data_json(), json!({ "forced": true }));
    }
}

#[test]
fn purge_from_the_trash_is_not_forced_and_removes_the_view() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        s.on("trash_token", id, json!({}));
        let out = s.on("purge_token", id, json!({ "force": true }));
        assert_eq!(out.data_json(), json!({ "forced": false }));
        assert!(s.view(id).is_none(), "a purged token has no view");
        let t = s.token(id);
        assert!(t.purged && t.trash.is_none());
    }
    // The secrets are dropped from memory.
    match &s.token(access).body {
        TokenBody::Access {
            access_token,
            refresh_token,
            ..
        } => {
            assert!(access_token.ciphertext.is_empty());
            assert!(refresh_token.is_none());
        }
        TokenBody::Client { .. } => unreachable!(),
    }
    // Its account is free.
    s.register(user(1), "google", "me@example.com");
}

#[test]
fn every_command_on_a_purged_token_is_not_found() {
    for name in targeting_commands() {
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        s.on("purge_token", client, json!({ "force": true }));
        s.on("purge_token", access, json!({ "force": true }));
        s.when(name.as_str(), valid_body(name, client, access))
            .then_err(ErrorCode::NotFound, Some("tokenId"));
    }
}

#[test]
fn every_command_on_another_workspaces_token_is_not_found() {
    for name in targeting_commands() {
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        let mut body = valid_body(name, client, access);
        body["workspaceId"] = json!(OTHER_WS);
        s.when(name.as_str(), body)
            .then_err(ErrorCode::NotFound, Some("tokenId"));
    }
}

#[test]
fn every_command_on_an_unknown_token_is_not_found() {
    for name in targeting_commands() {
        let mut s = Scenario::new();
        two_kinds(&mut s);
        let mut body = targeted(name);
        body["tokenId"] = json!(UNKNOWN);
        s.when(name.as_str(), body)
            .then_err(ErrorCode::NotFound, Some("tokenId"));
    }
}

#[test]
fn a_command_for_the_other_kind_is_invalid_input_on_token_id() {
    for name in targeting_commands() {
        if !client_only(name) && !access_only(name) {
            continue;
        }
        let mut s = Scenario::new();
        let (client, access) = two_kinds(&mut s);
        // Swap the targets.
        s.when(name.as_str(), valid_body(name, access, client))
            .then_invalid("tokenId");
    }
}

#[test]
fn trash_restore_revoke_and_purge_apply_to_both_kinds() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        s.on("trash_token", id, json!({}))
            .then_events(&[E::TokenTrashed]);
        s.on("restore_token", id, json!({}))
            .then_events(&[E::TokenRestored]);
        s.on("revoke_token", id, json!({}))
            .then_events(&[E::TokenRevoked]);
        s.on("purge_token", id, json!({ "force": true }))
            .then_events(&[E::TokenPurged]);
        assert_eq!(s.history(id).last().unwrap().token_kind, s.token(id).kind());
    }
}

// ---------------------------------------------------------------------------
// Permission groups

#[test]
fn assign_skips_groups_already_assigned() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "permissionGroups": groups(&["a"]) }));
    let out = s.on(
        "assign_permission_groups",
        id,
        json!({ "permissionGroups": groups(&["a", "b", "b", "c"]) }),
    );
    out.then_events(&[E::PermissionGroupsAssigned]);
    let data = out.data_json();
    let added: Vec<&str> = data["permissionGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["permissionGroupId"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["b", "c"]);
    assert_eq!(group_ids(&s, id), ["a", "b", "c"]);
    for g in assigned(&s, id).iter().skip(1) {
        assert_eq!(g.assigned_at, s.now());
        assert_eq!(g.assigned_by.agent_id, "user-1");
    }
}

#[test]
fn assign_of_only_known_groups_appends_nothing() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "permissionGroups": groups(&["a", "b"]) }));
    s.on(
        "assign_permission_groups",
        id,
        json!({ "permissionGroups": groups(&["b", "a", "a"]) }),
    )
    .then_nothing();
}

#[test]
fn unassign_removes_only_assigned_groups() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "permissionGroups": groups(&["a", "b", "c"]) }));
    s.on(
        "unassign_permission_groups",
        id,
        json!({ "permissionGroups": groups(&["x", "y"]) }),
    )
    .then_nothing();
    let out = s.on(
        "unassign_permission_groups",
        id,
        json!({ "permissionGroups": groups(&["c", "x", "a"]) }),
    );
    out.then_events(&[E::PermissionGroupsUnassigned]);
    assert_eq!(out.data_json(), json!({ "permissionGroupIds": ["c", "a"] }));
    assert_eq!(group_ids(&s, id), ["b"]);
}

#[test]
fn update_replaces_the_group_list_whole_keeping_assignment_records() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "permissionGroups": groups(&["a", "b"]) }));
    let original = assigned(&s, id);
    s.advance(60_000);
    let out = s.on(
        "update_client_token",
        id,
        json!({ "permissionGroups": groups(&["b", "c"]) }),
    );
    out.then_events(&[E::ClientTokenUpdated]);
    let now = assigned(&s, id);
    assert_eq!(group_ids(&s, id), ["b", "c"]);
    assert_eq!(now[0], original[1], "b keeps its original assignedAt");
    assert_eq!(now[1].assigned_at, s.now());
    assert_ne!(now[1].assigned_at, original[1].assigned_at);
    // The same list again changes nothing; an empty list clears all.
    s.on(
        "update_client_token",
        id,
        json!({ "permissionGroups": groups(&["b", "c"]) }),
    )
    .then_nothing();
    s.on("update_client_token", id, json!({ "permissionGroups": [] }))
        .then_events(&[E::ClientTokenUpdated]);
    assert!(group_ids(&s, id).is_empty());
}

#[test]
fn a_token_holds_at_most_256_groups() {
    let mut s = Scenario::new();
    let first: Vec<String> = (0..200).map(|i| format!("g-{i}")).collect();
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let id = s.issue(json!({ "permissionGroups": groups(&first) }));
    let more: Vec<String> = (200..257).map(|i| format!("g-{i}")).collect();
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    s.on(
        "assign_permission_groups",
        id,
        json!({ "permissionGroups": groups(&more) }),
    )
    .then_invalid("permissionGroups");
    s.on(
        "assign_permission_groups",
        id,
        json!({ "permissionGroups": groups(&more[..56]) }),
    )
    .then_events(&[E::PermissionGroupsAssigned]);
    assert_eq!(group_ids(&s, id).len(), 256);
    // One command may not name more than 256 either.
    let too_many: Vec<String> = (0..257).map(|i| format!("h-{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    s.when(
        "issue_client_token",
        json!({ "permissionGroups": groups(&too_many) }),
    )
    .then_invalid("permissionGroups");
}

// ---------------------------------------------------------------------------
// Issue, update and rotate

#[test]
fn issue_records_the_context() {
    let mut s = Scenario::new();
    let expires = T0_MS + 86_400_000 + 1; // not a whole second
    let out = s.when(
        "issue_client_token",
        json!({
            "name": "n",
            "providedResourceId": "p",
            "expires": expires,
            "permissionGroups": groups(&["g"]),
            "correlationId": "req-1",
        }),
    );
    out.then_events(&[E::ClientTokenIssued]);
    let EventData::ClientTokenIssued(data) = out.data() else {
        unreachable!()
    };
    assert_eq!(data.issued_at, s.now());
    assert_eq!(data.jwt.iat, s.now().secs());
    assert_eq!(data.jwt.kid, KID);
    assert_eq!(data.jwt.exp, Some(expires / 1000 + 1), "exp rounds up");
    assert_eq!(data.import, None);
    let env = &out.events[0];
    assert_eq!(env.correlation_id.as_deref(), Some("req-1"));
    assert_eq!(env.occurred_at, s.now());
    assert_eq!(env.workspace_id, WS);
    let view = s.view(out.decision().token_id).unwrap();
    assert_eq!(view.created_at, s.now());
    assert_eq!(view.updated_at, s.now());
    assert_eq!(view.last_updated_at, None);
    assert_eq!(view.permission_groups.unwrap().len(), 1);
}

#[test]
fn issue_with_an_expiry_not_in_the_future_is_invalid() {
    let mut s = Scenario::new();
    // The harness ticks before deciding; expiries are compared with that now.
    let now_at_decision = s.now_ms + TICK_MS;
    for expires in [T0_MS - 1, now_at_decision, 0] {
        s.now_ms = T0_MS;
        s.when("issue_client_token", json!({ "expires": expires }))
            .then_invalid("expires");
    }
    s.now_ms = T0_MS;
    s.when(
        "issue_client_token",
        json!({ "expires": now_at_decision + 1 }),
    )
    .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn expiry_must_be_epoch_ms_between_1970_and_9999() {
    let mut s = Scenario::new();
    for bad in [
        json!(-1),
        json!(253_402_300_800_000_i64),
        json!(1.5),
        json!("tomorrow"),
    ] {
        s.when("issue_client_token", json!({ "expires": bad }))
            .then_invalid("expires");
    }
    s.when(
        "issue_client_token",
        json!({ "expires": 253_402_300_799_999_i64 }),
    )
    .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn update_sets_and_clears_expiry() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "expires": T0_MS + 10_000_000 }));
    let out = s.on(
        "update_client_token",
        id,
        json!({ "expires": T0_MS + 20_000_000 }),
    );
    assert_eq!(out.data_json(), json!({ "expires": T0_MS + 20_000_000 }));
    s.on(
        "update_client_token",
        id,
        json!({ "expires": T0_MS + 20_000_000 }),
    )
    .then_nothing();
    let out = s.on("update_client_token", id, json!({ "expires": null }));
    assert_eq!(out.data_json(), json!({ "expires": null }));
    assert_eq!(s.view(id).unwrap().expires, None);
    s.on("update_client_token", id, json!({ "expires": null }))
        .then_nothing();
}

#[test]
fn update_may_shorten_expiry_into_the_past_so_the_token_expires_at_once() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "expires": T0_MS + 10_000_000 }));
    s.on("update_client_token", id, json!({ "expires": T0_MS }))
        .then_events(&[E::ClientTokenUpdated]);
    let view = s.view(id).unwrap().with_expired(s.now());
    assert_eq!(view.expired, Some(true));
    assert!(!view.is_active_at(s.now()));
}

#[test]
fn update_records_who_and_when() {
    let mut s = Scenario::new();
    let id = s.issue_named("a");
    s.advance(5_000);
    s.when(
        "update_client_token",
        json!({
            "tokenId": id.to_string(),
            "name": "b",
            "actor": { "agentId": "svc-9", "agentType": "service" },
        }),
    )
    .then_events(&[E::ClientTokenUpdated]);
    let view = s.view(id).unwrap();
    assert_eq!(view.last_updated_at, Some(s.now()));
    assert_eq!(view.updated_at, s.now());
    assert_eq!(
        view.last_updated_by,
        Some(Agent {
            agent_id: "svc-9".into(),
            agent_type: AgentType::Service
        })
    );
    assert_eq!(view.created_by.agent_id, "user-1");
}

#[test]
fn rotate_mints_a_new_string() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "expires": T0_MS + 86_400_000 }));
    let before = s.view(id).unwrap();
    s.advance(3_600_000);
    let out = s.on("rotate_client_token", id, json!({}));
    out.then_events(&[E::ClientTokenRotated]);
    let after = s.view(id).unwrap();
    assert_eq!(after.issued_at, Some(s.now()));
    assert_ne!(
        after.jwt.as_ref().unwrap().jti,
        before.jwt.as_ref().unwrap().jti
    );
    assert_eq!(after.jwt.as_ref().unwrap().iat, s.now().secs());
    assert_eq!(
        after.jwt.as_ref().unwrap().exp,
        Some((T0_MS + 86_400_000) / 1000)
    );
    assert_eq!(after.expires, before.expires);
}

#[test]
fn an_exhausted_id_generator_is_internal() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    s.force_next_token_id(client);
    s.when("issue_client_token", json!({}))
        .then_err(ErrorCode::Internal, None);
    s.force_next_token_id(access);
    s.when(
        "register_access_token",
        json!({
            "user": { "id": user(5).to_string() },
            "provider": "p",
            "accountName": "a",
            "accessToken": "t",
        }),
    )
    .then_err(ErrorCode::Internal, None);
}

#[test]
fn import_keeps_the_source_id_and_times_and_refuses_a_known_id() {
    let mut s = Scenario::new();
    let resource_id = Uuid::parse_str(UNKNOWN).unwrap();
    let created = Timestamp::parse("2020-05-01T10:00:00.123Z").unwrap();
    let origin = ImportOrigin {
        created_at: created,
        created_by: Some(Agent {
            agent_id: "old-admin".into(),
            agent_type: AgentType::User,
        }),
        source: "fimidara".into(),
        source_version: Some(3),
        updated_at: None,
    };
    let import = |expires| CommandEnvelope {
        command_id: Uuid::from_u128(99),
        workspace_id: WS.into(),
        actor: Agent::system(),
        expected_version: None,
        correlation_id: None,
        command: Command::IssueClientToken {
            name: Some("Imported".into()),
            provided_resource_id: None,
            permission_group_ids: None,
            expires,
            if_exists: Default::default(),
            import: Some(Box::new(ImportedClientFields {
                resource_id,
                issued_at: created,
                permission_groups: vec![AssignedPermissionGroup {
                    assigned_at: created,
                    assigned_by: Agent::system(),
                    permission_group_id: "g".into(),
                }],
                origin: origin.clone(),
            })),
        },
    };
    // An expired token imports as it is.
    let out = s.when_command(import(Some(created.millis() + 1)));
    out.then_events(&[E::ClientTokenIssued]);
    assert_eq!(out.decision().token_id, resource_id);
    let view = s.view(resource_id).unwrap();
    assert_eq!(view.created_at, created);
    assert_eq!(view.created_by.agent_id, "old-admin");
    assert_eq!(view.issued_at, Some(created));
    assert_eq!(view.import, Some(origin.clone()));
    s.on("rotate_client_token", resource_id, json!({}));
    let r = s
        .when_command(import(None))
        .then_err(ErrorCode::Conflict, Some("resourceId"))
        .clone();
    assert_eq!(r.current_version, Some(2));
    // The existing token's version is reported whatever the caller expected.
    let mut again = import(None);
    again.expected_version = Some(5);
    let r = s
        .when_command(again)
        .then_err(ErrorCode::Conflict, Some("resourceId"))
        .clone();
    assert_eq!(r.current_version, Some(2));
}

// ---------------------------------------------------------------------------
// Parsing: fields

#[test]
fn every_read_only_field_is_refused_by_name_in_every_command() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for name in CommandName::ALL {
        for field in READ_ONLY_FIELDS {
            let mut body = valid_body(name, client, access);
            body[*field] = json!("x");
            let r = s.when(name.as_str(), body).then_invalid(field).clone();
            assert!(r.message.contains("read-only"), "{name} {field}: {r}");
        }
    }
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for name in CommandName::ALL {
        for field in ["colour", "Name", "token_id", "ifexists"] {
            let mut body = valid_body(name, client, access);
            body[field] = json!(1);
            s.when(name.as_str(), body).then_invalid(field);
        }
    }
    // A field of another command is unknown here.
    s.on("rotate_client_token", client, json!({ "name": "x" }))
        .then_invalid("name");
    s.on("trash_token", client, json!({ "force": true }))
        .then_invalid("force");
    s.when(
        "issue_client_token",
        json!({ "tokenId": client.to_string() }),
    )
    .then_invalid("tokenId");
}

#[test]
fn nested_objects_refuse_unknown_fields() {
    let mut s = Scenario::new();
    let (client, _) = two_kinds(&mut s);
    s.when(
        "issue_client_token",
        json!({ "actor": { "agentId": "a", "agentType": "user", "role": "admin" } }),
    )
    .then_invalid("actor.role");
    s.when(
        "register_access_token",
        json!({
            "user": { "id": user(1).to_string(), "name": "Jo" },
            "provider": "p", "accountName": "a", "accessToken": "t",
        }),
    )
    .then_invalid("user.name");
    // The ledger fills assignedAt / assignedBy; a caller may not.
    let r = s
        .on(
            "assign_permission_groups",
            client,
            json!({ "permissionGroups": [{ "permissionGroupId": "g", "assignedAt": "2024-01-01T00:00:00Z" }] }),
        )
        .then_invalid("permissionGroups[0].assignedAt")
        .clone();
    assert!(r.message.contains("read-only"), "{r}");
    let r = s
        .when(
            "issue_client_token",
            json!({ "permissionGroups": [{ "permissionGroupId": "g" }, { "permissionGroupId": "h", "assignedBy": { "agentId": "x", "agentType": "user" } }] }),
        )
        .then_invalid("permissionGroups[1].assignedBy")
        .clone();
    assert!(r.message.contains("read-only"), "{r}");
}

#[test]
fn wrong_types_name_the_field_path() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("issue_client_token", json!({ "name": 5 }), "name"),
        ("issue_client_token", json!({ "name": ["a"] }), "name"),
        (
            "issue_client_token",
            json!({ "providedResourceId": true }),
            "providedResourceId",
        ),
        (
            "issue_client_token",
            json!({ "ifExists": "maybe" }),
            "ifExists",
        ),
        (
            "issue_client_token",
            json!({ "permissionGroups": "g" }),
            "permissionGroups",
        ),
        (
            "issue_client_token",
            json!({ "permissionGroups": [{}] }),
            "permissionGroups[0]",
        ),
        (
            "issue_client_token",
            json!({ "permissionGroups": [{ "permissionGroupId": "a" }, { "permissionGroupId": 7 }] }),
            "permissionGroups[1].permissionGroupId",
        ),
        (
            "issue_client_token",
            json!({ "permissionGroups": [{ "permissionGroupId": "a" }, { "permissionGroupId": " " }] }),
            "permissionGroups[1].permissionGroupId",
        ),
        // " a " would be another group than "a".
        (
            "assign_permission_groups",
            json!({ "tokenId": Uuid::nil().to_string(), "permissionGroups": [{ "permissionGroupId": " a " }] }),
            "permissionGroups[0].permissionGroupId",
        ),
        (
            "issue_client_token",
            json!({ "permissionGroups": [{ "permissionGroupId": "" }] }),
            "permissionGroups[0].permissionGroupId",
        ),
        (
            "issue_client_token",
            json!({ "expectedVersion": "1" }),
            "expectedVersion",
        ),
        (
            "issue_client_token",
            json!({ "expectedVersion": -1 }),
            "expectedVersion",
        ),
        (
            "issue_client_token",
            json!({ "correlationId": 3 }),
            "correlationId",
        ),
        ("issue_client_token", json!({ "commandId": 3 }), "commandId"),
        (
            "issue_client_token",
            json!({ "workspaceId": 3 }),
            "workspaceId",
        ),
        ("issue_client_token", json!({ "actor": "me" }), "actor"),
        (
            "issue_client_token",
            json!({ "actor": { "agentId": "a", "agentType": "robot" } }),
            "actor.agentType",
        ),
        (
            "issue_client_token",
            json!({ "actor": { "agentId": 1, "agentType": "user" } }),
            "actor.agentId",
        ),
        (
            "issue_client_token",
            json!({ "actor": { "agentId": " ", "agentType": "user" } }),
            "actor.agentId",
        ),
        (
            "issue_client_token",
            json!({ "actor": { "agentType": "user" } }),
            "actor",
        ),
        ("rotate_client_token", json!({ "tokenId": 1 }), "tokenId"),
        (
            "purge_token",
            json!({ "tokenId": client.to_string(), "force": "yes" }),
            "force",
        ),
        (
            "trash_token",
            json!({ "tokenId": client.to_string(), "reason": 1 }),
            "reason",
        ),
        (
            "update_client_token",
            json!({ "tokenId": client.to_string(), "name": 1 }),
            "name",
        ),
        (
            "update_client_token",
            json!({ "tokenId": client.to_string(), "expires": "x" }),
            "expires",
        ),
        (
            "register_access_token",
            json!({ "user": { "id": 5 }, "provider": "p", "accountName": "a", "accessToken": "t" }),
            "user.id",
        ),
        (
            "register_access_token",
            json!({ "user": "u", "provider": "p", "accountName": "a", "accessToken": "t" }),
            "user",
        ),
        (
            "register_access_token",
            json!({ "user": { "id": user(1).to_string() }, "provider": "p", "accountName": "a", "accessToken": 5 }),
            "accessToken",
        ),
        (
            "register_access_token",
            json!({ "user": { "id": user(1).to_string() }, "provider": ["p"], "accountName": "a", "accessToken": "t" }),
            "provider",
        ),
        (
            "register_access_token",
            json!({ "id": 1, "user": { "id": user(1).to_string() }, "provider": "p", "accountName": "a", "accessToken": "t" }),
            "id",
        ),
        (
            "refresh_access_token",
            json!({ "tokenId": access.to_string(), "accessToken": "t", "refreshToken": {} }),
            "refreshToken",
        ),
        (
            "update_access_token",
            json!({ "tokenId": access.to_string(), "accountName": 1 }),
            "accountName",
        ),
    ];
    for (name, body, field) in cases {
        let out = s.when(name, body.clone());
        let r = match &out.result {
            Err(r) => r.clone(),
            Ok(_) => panic!("{name} {body} was accepted"),
        };
        assert_eq!(
            (r.code, r.field.as_deref()),
            (ErrorCode::InvalidInput, Some(field)),
            "{name} {body}: {r}"
        );
        assert_eq!(out.before, out.after);
    }
}

/// A secret sent in the wrong shape is refused without being echoed: serde
/// quotes the value it rejects, and rejections go into replies and logs.
#[test]
fn a_misshapen_secret_is_refused_without_being_echoed() {
    let mut s = Scenario::new();
    let (_, access) = two_kinds(&mut s);
    let register = |secret: Value| {
        json!({ "user": { "id": user(9).to_string() }, "provider": "p",
                "accountName": "a", "accessToken": secret })
    };
    let cases = [
        (
            "register_access_token",
            register(json!(4242424242_u64)),
            "accessToken",
        ),
        (
            "register_access_token",
            register(json!(42.4242)),
            "accessToken",
        ),
        (
            "refresh_access_token",
            json!({ "tokenId": access.to_string(), "accessToken": "t", "refreshToken": 4242424242_u64 }),
            "refreshToken",
        ),
    ];
    for (name, body, field) in cases {
        let r = s.when(name, body.clone()).then_invalid(field).clone();
        assert!(!r.message.contains("4242"), "{name} {body}: {r}");
        assert!(r.message.contains("expected a string"), "{r}");
    }
    // A whole body that is one string (a secret sent to the wrong subject).
    let r = s
        .when_bytes("issue_client_token", b"\"ya29.a-secret-4242\"")
        .then_invalid("body")
        .clone();
    assert!(!r.message.contains("4242"), "{r}");
}

#[test]
fn required_fields_are_required() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    let command_id = Uuid::from_u128(1).to_string();
    let common = json!({ "commandId": command_id, "workspaceId": WS, "actor": actor() });
    for missing in ["commandId", "workspaceId", "actor"] {
        let mut body = common.clone();
        body.as_object_mut().unwrap().remove(missing);
        s.when_raw("issue_client_token", body.clone())
            .then_invalid(missing);
        // null is as good as absent.
        body[missing] = Value::Null;
        s.when_raw("issue_client_token", body).then_invalid(missing);
    }
    for name in targeting_commands() {
        let mut body = valid_body(name, client, access);
        body.as_object_mut().unwrap().remove("tokenId");
        s.when(name.as_str(), body).then_invalid("tokenId");
    }
    let register = json!({
        "user": { "id": user(3).to_string() },
        "provider": "p",
        "accountName": "a",
        "accessToken": "t",
    });
    for missing in ["user", "provider", "accountName", "accessToken"] {
        let mut body = register.clone();
        body.as_object_mut().unwrap().remove(missing);
        s.when("register_access_token", body).then_invalid(missing);
    }
    s.when(
        "register_access_token",
        json!({ "user": {}, "provider": "p", "accountName": "a", "accessToken": "t" }),
    )
    .then_invalid("user");
    s.on("refresh_access_token", access, json!({}))
        .then_invalid("accessToken");
    s.on("assign_permission_groups", client, json!({}))
        .then_invalid("permissionGroups");
    s.on(
        "unassign_permission_groups",
        client,
        json!({ "permissionGroups": [] }),
    )
    .then_invalid("permissionGroups");
    s.on(
        "assign_permission_groups",
        client,
        json!({ "permissionGroups": [] }),
    )
    .then_invalid("permissionGroups");
}

#[test]
fn an_update_must_change_something() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    s.on("update_client_token", client, json!({}))
        .then_invalid("body");
    s.on(
        "update_client_token",
        client,
        json!({ "permissionGroups": null }),
    )
    .then_invalid("body");
    s.on("update_access_token", access, json!({}))
        .then_invalid("body");
    s.on("update_access_token", access, json!({ "provider": null }))
        .then_invalid("body");
}

#[test]
fn text_must_not_be_blank_or_contain_control_characters() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for bad in [
        "",
        "   ",
        "a\u{0}b",
        "line\nbreak",
        "tab\there",
        "\u{7f}",
        // Reorders what an auditor reads, or looks like a new line.
        "abc\u{202e}fed",
        "a\u{2066}b",
        "forged\u{2028}line",
        "x\u{2029}",
    ] {
        s.when("issue_client_token", json!({ "name": bad }))
            .then_invalid("name");
        s.when("issue_client_token", json!({ "providedResourceId": bad }))
            .then_invalid("providedResourceId");
        s.on("trash_token", client, json!({ "reason": bad }))
            .then_invalid("reason");
        s.on("update_access_token", access, json!({ "provider": bad }))
            .then_invalid("provider");
        s.on("update_access_token", access, json!({ "accountName": bad }))
            .then_invalid("accountName");
        if !bad.trim().is_empty() {
            s.when("issue_client_token", json!({ "correlationId": bad }))
                .then_invalid("correlationId");
            s.when(
                "issue_client_token",
                json!({ "actor": { "agentId": bad, "agentType": "user" } }),
            )
            .then_invalid("actor.agentId");
        }
    }
    // Right-to-left text keeps its marks (they reorder nothing themselves).
    s.on(
        "trash_token",
        client,
        json!({ "reason": "\u{5e9}\u{5dc}\u{5d5}\u{5dd}\u{200f} 42" }),
    )
    .then_events(&[E::TokenTrashed]);
    // Secrets may hold any characters but must not be empty.
    s.on("refresh_access_token", access, json!({ "accessToken": "" }))
        .then_invalid("accessToken");
    s.on(
        "refresh_access_token",
        access,
        json!({ "accessToken": "t", "refreshToken": "" }),
    )
    .then_invalid("refreshToken");
    s.on(
        "refresh_access_token",
        access,
        json!({ "accessToken": " \n\t" }),
    )
    .then_events(&[E::AccessTokenRefreshed]);
}

/// (command, field, limit, unit is bytes) for every bounded field.
fn bounded_fields() -> Vec<(CommandName, &'static str, usize, bool)> {
    use ledger_core::validate::*;
    vec![
        (CommandName::IssueClientToken, "name", NAME_LEN_MAX, false),
        (CommandName::UpdateClientToken, "name", NAME_LEN_MAX, false),
        (
            CommandName::IssueClientToken,
            "providedResourceId",
            PROVIDED_ID_LEN_MAX,
            false,
        ),
        (
            CommandName::RegisterAccessToken,
            "provider",
            PROVIDER_LEN_MAX,
            false,
        ),
        (
            CommandName::UpdateAccessToken,
            "provider",
            PROVIDER_LEN_MAX,
            false,
        ),
        (
            CommandName::RegisterAccessToken,
            "accountName",
            ACCOUNT_NAME_LEN_MAX,
            false,
        ),
        (
            CommandName::UpdateAccessToken,
            "accountName",
            ACCOUNT_NAME_LEN_MAX,
            false,
        ),
        (CommandName::TrashToken, "reason", REASON_LEN_MAX, false),
        (CommandName::RevokeToken, "reason", REASON_LEN_MAX, false),
        (
            CommandName::RegisterAccessToken,
            "accessToken",
            SECRET_LEN_MAX,
            true,
        ),
        (
            CommandName::RegisterAccessToken,
            "refreshToken",
            SECRET_LEN_MAX,
            true,
        ),
        (
            CommandName::RefreshAccessToken,
            "accessToken",
            SECRET_LEN_MAX,
            true,
        ),
        (
            CommandName::RefreshAccessToken,
            "refreshToken",
            SECRET_LEN_MAX,
            true,
        ),
        (
            CommandName::IssueClientToken,
            "correlationId",
            AGENT_ID_LEN_MAX,
            false,
        ),
    ]
}

#[test]
fn the_limits_are_the_documented_ones() {
    use ledger_core::validate::*;
    assert_eq!(NAME_LEN_MAX, 200);
    assert_eq!(PROVIDED_ID_LEN_MAX, 300);
    assert_eq!(WORKSPACE_ID_LEN_MAX, 64);
    assert_eq!(COMMAND_BYTES_MAX, 64 * 1024);
}

#[test]
fn oversized_strings_are_refused_at_one_past_the_limit() {
    for (name, field, max, bytes) in bounded_fields() {
        // Characters count, not bytes, except for secrets; 'ä' is two bytes.
        let unit = if bytes { "a" } else { "ä" };
        for (len, ok) in [(max, true), (max + 1, false)] {
            let mut s = Scenario::new();
            let (client, access) = two_kinds(&mut s);
            let mut body = valid_body(name, client, access);
            body[field] = json!(unit.repeat(len));
            let out = s.when(name.as_str(), body);
            if ok {
                assert!(
                    out.result.is_ok(),
                    "{name} {field} at {len}: {:?}",
                    out.result
                );
            } else {
                out.then_invalid(field);
            }
        }
    }
    // Secrets count bytes: 4097 two-byte characters are too many.
    let mut s = Scenario::new();
    let (_, access) = two_kinds(&mut s);
    s.on(
        "refresh_access_token",
        access,
        json!({ "accessToken": "ä".repeat(4097) }),
    )
    .then_invalid("accessToken");
}

#[test]
fn oversized_group_ids_and_agent_ids_are_refused() {
    let mut s = Scenario::new();
    let (client, _) = two_kinds(&mut s);
    let ok = "g".repeat(200);
    let long = "g".repeat(201);
    s.on(
        "assign_permission_groups",
        client,
        json!({ "permissionGroups": groups(&[&ok]) }),
    )
    .then_events(&[E::PermissionGroupsAssigned]);
    s.on(
        "assign_permission_groups",
        client,
        json!({ "permissionGroups": groups(&["x", &long]) }),
    )
    .then_invalid("permissionGroups[1].permissionGroupId");
    s.when(
        "issue_client_token",
        json!({ "actor": { "agentId": "a".repeat(200), "agentType": "service" } }),
    )
    .then_events(&[E::ClientTokenIssued]);
    s.when(
        "issue_client_token",
        json!({ "actor": { "agentId": "a".repeat(201), "agentType": "service" } }),
    )
    .then_invalid("actor.agentId");
}

#[test]
fn ids_must_be_lowercase_canonical_uuids() {
    let good = "c2fb2dbe-39eb-421a-b07c-5a14671fbbb5";
    let bad = [
        "C2FB2DBE-39EB-421A-B07C-5A14671FBBB5",
        "c2fb2dbe39eb421ab07c5a14671fbbb5",
        "{c2fb2dbe-39eb-421a-b07c-5a14671fbbb5}",
        "urn:uuid:c2fb2dbe-39eb-421a-b07c-5a14671fbbb5",
        "c2fb2dbe-39eb-421a-b07c-5a14671fbbb",
        "garbage",
        "",
    ];
    let mut s = Scenario::new();
    let register = |id: Option<&str>, user_id: &str| {
        let mut b = json!({
            "user": { "id": user_id },
            "provider": "p",
            "accountName": "a",
            "accessToken": "t",
        });
        if let Some(id) = id {
            b["id"] = json!(id);
        }
        b
    };
    for b in bad {
        for name in targeting_commands() {
            let mut body = targeted(name);
            body["tokenId"] = json!(b);
            s.when(name.as_str(), body).then_invalid("tokenId");
        }
        s.when("register_access_token", register(Some(b), good))
            .then_invalid("id");
        s.when("register_access_token", register(None, b))
            .then_invalid("user.id");
        s.when("issue_client_token", json!({ "commandId": b }))
            .then_invalid("commandId");
    }
    s.when("register_access_token", register(Some(good), good))
        .then_events(&[E::AccessTokenRegistered]);
}

#[test]
fn workspace_ids_are_nats_subject_tokens() {
    let mut s = Scenario::new();
    for bad in ["", "a.b", "a b", "a*", "a>", "ä", &"w".repeat(65)] {
        s.when("issue_client_token", json!({ "workspaceId": bad }))
            .then_invalid("workspaceId");
    }
    for good in ["Acme_1-x", &"w".repeat(64)] {
        s.when("issue_client_token", json!({ "workspaceId": good }))
            .then_events(&[E::ClientTokenIssued]);
    }
}

// ---------------------------------------------------------------------------
// Parsing: bodies

#[test]
fn malformed_json_and_non_objects_are_invalid_bodies() {
    let mut s = Scenario::new();
    for body in [
        &b"{"[..],
        b"",
        b"not json",
        b"{\"name\": }",
        b"[]",
        b"\"text\"",
        b"42",
        b"null",
        b"{} {}",
        b"\xff\xfe",
    ] {
        for name in CommandName::ALL {
            s.when_bytes(name.as_str(), body).then_invalid("body");
        }
    }
    for body in [json!([]), json!("x"), json!(1), Value::Null, json!(true)] {
        s.when_raw("issue_client_token", body).then_invalid("body");
    }
}

/// A key given twice means one thing to a parser that keeps the last and
/// another to one that keeps the first: refused, at any depth.
#[test]
fn a_key_given_twice_is_a_malformed_body() {
    let mut s = Scenario::new();
    let body = serde_json::to_string(&s.complete(json!({ "name": "a" }))).unwrap();
    let twice = body.replacen("\"name\":\"a\"", "\"name\":\"a\",\"name\":\"MyToken\"", 1);
    assert_ne!(body, twice);
    let r = s
        .when_bytes("issue_client_token", twice.as_bytes())
        .then_invalid("body")
        .clone();
    assert!(r.message.contains("duplicate key \"name\""), "{r}");
    let nested = body.replacen("\"agentId\":", "\"agentId\":\"x\",\"agentId\":", 1);
    assert_ne!(body, nested);
    s.when_bytes("issue_client_token", nested.as_bytes())
        .then_invalid("body");
    s.when_bytes("issue_client_token", body.as_bytes())
        .then_events(&[E::ClientTokenIssued]);
}

#[test]
fn bodies_are_bounded_in_bytes() {
    let mut s = Scenario::new();
    let mut body = serde_json::to_vec(&s.complete(json!({ "name": "padded" }))).unwrap();
    // Whitespace counts: pad to exactly the limit, then one past it.
    body.resize(COMMAND_BYTES_MAX, b' ');
    s.when_bytes("issue_client_token", &body)
        .then_events(&[E::ClientTokenIssued]);
    let mut body = serde_json::to_vec(&s.complete(json!({ "name": "padded2" }))).unwrap();
    body.resize(COMMAND_BYTES_MAX + 1, b' ');
    let r = s
        .when_bytes("issue_client_token", &body)
        .then_invalid("body")
        .clone();
    assert!(r.message.contains("larger"), "{r}");
}

#[test]
fn parse_gives_back_what_was_sent() {
    let body = json!({
        "commandId": "c2fb2dbe-39eb-421a-b07c-5a14671fbbb5",
        "workspaceId": "acme",
        "actor": { "agentId": "svc", "agentType": "client_token" },
        "expectedVersion": 3,
        "correlationId": "req-7",
        "tokenId": UNKNOWN,
        "name": null,
        "expires": 1_800_000_000_000_i64,
        "permissionGroups": groups(&["a", "b", "a"]),
    });
    let cmd = command::parse(
        CommandName::UpdateClientToken,
        &serde_json::to_vec(&body).unwrap(),
    )
    .unwrap();
    assert_eq!(cmd.expected_version, Some(3));
    assert_eq!(cmd.correlation_id.as_deref(), Some("req-7"));
    assert_eq!(cmd.actor.agent_type, AgentType::ClientToken);
    assert_eq!(
        cmd.command,
        Command::UpdateClientToken {
            token_id: Uuid::parse_str(UNKNOWN).unwrap(),
            name: command::Patch::Clear,
            expires: command::Patch::Set(1_800_000_000_000),
            permission_group_ids: Some(vec!["a".into(), "b".into()]),
        }
    );
    assert_eq!(cmd.command.name(), CommandName::UpdateClientToken);
    assert_eq!(
        cmd.command.token_id(),
        Some(Uuid::parse_str(UNKNOWN).unwrap())
    );
}

#[test]
fn secrets_are_sealed_per_field_and_never_debug_printed() {
    let body = json!({
        "commandId": "c2fb2dbe-39eb-421a-b07c-5a14671fbbb5",
        "workspaceId": "acme",
        "actor": actor(),
        "user": { "id": user(1).to_string() },
        "provider": "google",
        "accountName": "me@example.com",
        "accessToken": "super-secret-at",
        "refreshToken": "super-secret-rt",
    });
    let parsed = command::parse_value(CommandName::RegisterAccessToken, body).unwrap();
    assert!(!format!("{parsed:?}").contains("super-secret"));
    let mut seen = Vec::new();
    let sealed = parsed
        .try_map_secrets(|field, secret| {
            seen.push(field);
            fake_seal(field, secret)
        })
        .unwrap();
    assert_eq!(seen, ["accessToken", "refreshToken"]);
    let Command::RegisterAccessToken {
        access_token,
        refresh_token,
        ..
    } = sealed.command
    else {
        unreachable!()
    };
    assert_eq!(access_token.fingerprint, "fp:super-secret-at");
    assert_eq!(refresh_token.unwrap().fingerprint, "fp:super-secret-rt");
}

#[test]
fn command_names_round_trip() {
    let mut seen = HashSet::new();
    for name in CommandName::ALL {
        assert_eq!(CommandName::parse(name.as_str()), Some(name));
        assert_eq!(name.to_string(), name.as_str());
        assert_eq!(serde_json::to_value(name).unwrap(), json!(name.as_str()));
        assert!(seen.insert(name.as_str()));
    }
    assert_eq!(CommandName::parse("drop_table"), None);
}

#[test]
fn error_codes_have_stable_names_and_statuses() {
    let mut seen = HashSet::new();
    for code in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        assert_eq!(code.to_string(), code.as_str());
        assert!(seen.insert(code.as_str()));
        assert!(matches!(code.status(), 400..=599), "{code}");
    }
    assert_eq!(ErrorCode::InvalidInput.status(), 400);
    assert_eq!(ErrorCode::NotFound.status(), 404);
    assert_eq!(ErrorCode::Conflict.status(), 409);
    let r = ledger_core::Rejection::conflict(3, 4);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["code"], "conflict");
    assert_eq!(json["currentVersion"], 4);
    assert_eq!(json["field"], "expectedVersion");
}

// ---------------------------------------------------------------------------
// Views and keys

#[test]
fn views_show_the_seeds_fields_and_round_trip() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    let c = s.view(client).unwrap();
    assert_eq!(c.kind, ledger_core::TokenKind::Client);
    assert_eq!((c.resource_id, c.id), (Some(client), None));
    assert_eq!(c.token_id(), client);
    assert!(c.user.is_none() && c.provider.is_none() && c.token_str.is_none());
    let a = s.view(access).unwrap();
    assert_eq!((a.resource_id, a.id), (None, Some(access)));
    assert_eq!(a.user.as_ref().unwrap().id, user(1));
    assert!(a.name.is_none() && a.permission_groups.is_none() && a.jwt.is_none());
    assert!(a.access_token.is_none() && a.refresh_token.is_none());
    for view in [c, a] {
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["revoked"], json!(false));
        assert!(
            json.get("expired").is_none(),
            "expired is computed when read"
        );
        let back: ledger_core::TokenView = serde_json::from_value(json).unwrap();
        assert_eq!(back, view);
        let read = view.clone().with_expired(s.now());
        assert_eq!(read.expired, Some(false));
        assert!(read.is_active_at(s.now()));
    }
}

#[test]
fn a_client_token_expires_when_read_without_an_event() {
    let mut s = Scenario::new();
    let id = s.issue(json!({ "expires": T0_MS + 10 * TICK_MS }));
    let events = s.log.len();
    let view = s.view(id).unwrap();
    let at = |ms| Timestamp::from_millis(ms).unwrap();
    assert!(!view.is_expired_at(at(T0_MS + 10 * TICK_MS - 1)));
    assert!(view.is_expired_at(at(T0_MS + 10 * TICK_MS)));
    assert!(!view.is_active_at(at(T0_MS + 10 * TICK_MS)));
    assert_eq!(s.log.len(), events);
}

/// An update that moves `expires` later leaves the current string capped by
/// its own `exp`: the view says so (as verification does), and a rotation
/// mints a string that lasts until the new expiry.
#[test]
fn a_later_expiry_takes_effect_for_the_string_at_its_rotation() {
    let mut s = Scenario::new();
    let first = T0_MS + 10 * TICK_MS;
    let later = T0_MS + 100 * TICK_MS;
    let id = s.issue(json!({ "expires": first }));
    let at = |ms| Timestamp::from_millis(ms).unwrap();
    assert!(!s.view(id).unwrap().string_expires_first());
    s.on("update_client_token", id, json!({ "expires": later }));
    let view = s.view(id).unwrap();
    assert_eq!(view.expires, Some(later));
    assert!(view.string_expires_first());
    assert!(!view.is_expired_at(at(first - 1)));
    assert!(
        view.is_expired_at(at(first)),
        "the string's exp still caps it"
    );
    s.on("rotate_client_token", id, json!({}));
    let view = s.view(id).unwrap();
    assert!(!view.string_expires_first());
    assert!(!view.is_expired_at(at(later - 1)));
    assert!(view.is_expired_at(at(later)));
    // Cleared: the string expires, the token would not.
    s.on("update_client_token", id, json!({ "expires": null }));
    let view = s.view(id).unwrap();
    assert!(view.string_expires_first());
    assert!(view.is_expired_at(at(later)));
}

#[test]
fn trashed_and_revoked_views_are_inactive() {
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    s.on("trash_token", client, json!({}));
    s.on("revoke_token", access, json!({}));
    assert!(!s.view(client).unwrap().is_active_at(s.now()));
    assert!(!s.view(access).unwrap().is_active_at(s.now()));
}

#[test]
fn reservation_storage_keys_are_distinct_per_kind_and_part() {
    use ledger_core::Reservation;
    let keys = [
        Reservation::name("ws", "a"),
        Reservation::name("ws", "A"),
        Reservation::name("ws2", "a"),
        Reservation::ProvidedId {
            workspace_id: "ws".into(),
            provided_id: "a".into(),
        },
        Reservation::account("ws", user(1), "google", "a"),
        Reservation::account("ws", user(2), "google", "a"),
        Reservation::account("ws", user(1), "GOOGLE", "A"),
        Reservation::account("ws", user(1), "google", "b"),
    ];
    let bytes: HashSet<Vec<u8>> = keys.iter().map(Reservation::storage_key).collect();
    // Folding makes the 1st/2nd and 5th/7th the same key, and only those.
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[4], keys[6]);
    assert_eq!(bytes.len(), keys.len() - 2);
}

#[test]
fn an_unassign_may_name_a_group_id_from_before_the_key_rules() {
    // Held ids may predate the rules for new ones (" a " with its spaces):
    // unassigning one by id must stay possible.
    let body = |ids: &[&str]| {
        json!({
            "commandId": Uuid::new_v4().to_string(),
            "workspaceId": WS,
            "actor": {"agentId": "alice", "agentType": "user"},
            "tokenId": Uuid::new_v4().to_string(),
            "permissionGroups": ids.iter().map(|id| json!({"permissionGroupId": id})).collect::<Vec<_>>(),
        })
    };
    assert!(command::parse_value(CommandName::UnassignPermissionGroups, body(&[" a "])).is_ok());
    let refused =
        command::parse_value(CommandName::AssignPermissionGroups, body(&[" a "])).unwrap_err();
    assert_eq!(
        refused.field.as_deref(),
        Some("permissionGroups[0].permissionGroupId")
    );
}

#[test]
fn secrets_are_revealed_only_for_a_live_token_of_the_workspace() {
    use ledger_core::decide::may_reveal;
    let mut s = Scenario::new();
    let (client, access) = two_kinds(&mut s);
    for id in [client, access] {
        let token = may_reveal(s.state.token(&id), WS).expect("a live token reveals");
        assert_eq!(token.id, id);
    }
    fn code(s: &Scenario, id: Uuid, ws: &str) -> ledger_core::Rejection {
        may_reveal(s.state.token(&id), ws).unwrap_err()
    }
    let other = code(&s, client, OTHER_WS);
    assert_eq!(
        (other.code, other.field.as_deref()),
        (ErrorCode::NotFound, Some("tokenId"))
    );
    let unknown = may_reveal(None, WS).unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);

    s.on("trash_token", access, json!({}))
        .then_events(&[E::TokenTrashed]);
    assert_eq!(code(&s, access, WS).code, ErrorCode::Trashed);
    s.on("restore_token", access, json!({}))
        .then_events(&[E::TokenRestored]);
    assert!(may_reveal(s.state.token(&access), WS).is_ok());

    s.on("revoke_token", client, json!({}))
        .then_events(&[E::TokenRevoked]);
    assert_eq!(code(&s, client, WS).code, ErrorCode::Revoked);
    // Revoked and then trashed: revoked is what is final.
    s.on("trash_token", client, json!({}))
        .then_events(&[E::TokenTrashed]);
    assert_eq!(code(&s, client, WS).code, ErrorCode::Revoked);

    s.on("purge_token", access, json!({ "force": true }))
        .then_events(&[E::TokenPurged]);
    assert_eq!(code(&s, access, WS).code, ErrorCode::NotFound);
}
