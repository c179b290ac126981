//! Every event the ledger actually emits validates against its schema: a
//! history touching all twelve event types, run through a real store.

use ledger_catalogue::Catalogue;
use ledger_core::command::parse_value;
use ledger_core::{CommandName, EventType};
use ledger_crypto::MasterKey;
use ledger_store::{Store, StoreConfig};
use serde_json::{json, Value};
use std::collections::HashSet;
use uuid::Uuid;

fn run(store: &Store, name: CommandName, mut body: Value) -> Uuid {
    let obj = body.as_object_mut().unwrap();
    obj.insert("commandId".into(), json!(Uuid::new_v4().to_string()));
    obj.insert("workspaceId".into(), json!("acme"));
    obj.insert(
        "actor".into(),
        json!({"agentId": "alice", "agentType": "user"}),
    );
    store
        .execute_blocking(parse_value(name, body).expect("valid"))
        .expect("accepted")
        .token_id
}

#[test]
fn every_emitted_event_validates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            master_key: Some(MasterKey::generate()),
            ..StoreConfig::default()
        },
    )
    .unwrap();
    use CommandName as C;
    let c = run(
        &store,
        C::IssueClientToken,
        json!({"name": "Bot", "providedResourceId": "user-1", "expires": 4_102_444_800_000i64,
               "permissionGroups": [{"permissionGroupId": "readers"}]}),
    );
    let id = c.to_string();
    run(
        &store,
        C::UpdateClientToken,
        json!({"tokenId": id, "name": "Bot 2", "expires": null}),
    );
    run(
        &store,
        C::AssignPermissionGroups,
        json!({"tokenId": id, "permissionGroups": [{"permissionGroupId": "writers"}]}),
    );
    run(
        &store,
        C::UnassignPermissionGroups,
        json!({"tokenId": id, "permissionGroups": [{"permissionGroupId": "readers"}]}),
    );
    run(&store, C::RotateClientToken, json!({"tokenId": id}));
    run(
        &store,
        C::TrashToken,
        json!({"tokenId": id, "reason": "cleanup"}),
    );
    run(&store, C::RestoreToken, json!({"tokenId": id}));
    run(
        &store,
        C::RevokeToken,
        json!({"tokenId": id, "reason": "leaked"}),
    );
    let a = run(
        &store,
        C::RegisterAccessToken,
        json!({"user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"}, "provider": "google",
               "accountName": "jsmith@gmail.com", "accessToken": "secret-a", "refreshToken": "secret-r"}),
    );
    let aid = a.to_string();
    run(
        &store,
        C::RefreshAccessToken,
        json!({"tokenId": aid, "accessToken": "secret-b", "refreshToken": "secret-s"}),
    );
    run(
        &store,
        C::UpdateAccessToken,
        json!({"tokenId": aid, "accountName": "john@gmail.com"}),
    );
    run(
        &store,
        C::PurgeToken,
        json!({"tokenId": aid, "force": true}),
    );

    let catalogue = Catalogue::load();
    let mut seen = HashSet::new();
    for ev in store.iter_from(1) {
        let ev = ev.unwrap();
        let published: Value = serde_json::from_slice(&ev.published_bytes().unwrap()).unwrap();
        if let Err(violations) = catalogue.validate_envelope(&published) {
            panic!("event at {} does not validate: {violations:?}", ev.position);
        }
        seen.insert(ev.envelope().unwrap().event_type());
    }
    let all: HashSet<EventType> = EventType::ALL.iter().copied().collect();
    assert_eq!(seen, all, "the history covers every event type");
    store.shutdown().unwrap();
}
