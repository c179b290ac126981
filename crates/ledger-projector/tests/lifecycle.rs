//! How views follow a token's life, survive restarts, and equal a rebuild.

mod support;

use ledger_core::validate::fold;
use ledger_core::{CommandName, Envelope};
use ledger_projector::{keys, Lookup, Projector};
use ledger_store::Store;
use serde_json::json;
use support::*;
use uuid::Uuid;

#[test]
fn purge_removes_the_view_and_every_index_key() {
    let (_dir, _master, store) = fresh();
    let client = issue(
        &store,
        json!({"name": "Doomed", "providedResourceId": "ext-doomed"}),
    );
    let access = register(&store, USER, "google", "a@example.com");
    let keeper = issue(&store, json!({"name": "Keeper"}));
    let mut p = projector(&store);
    let dump = p.dump().unwrap();
    assert!(!keys_containing(&dump, client.as_bytes()).is_empty());

    // Trashed: hidden from listings, still found, still holding its name.
    on(&store, CommandName::TrashToken, client, json!({}));
    on(&store, CommandName::TrashToken, access, json!({}));
    p.catch_up(&store).unwrap();
    let now = now();
    let trashed = p
        .get(WS, Lookup::Name("doomed".into()), now)
        .unwrap()
        .unwrap();
    assert!(trashed.trash_item.is_some());
    assert!(p
        .get(WS, Lookup::ProvidedId("ext-doomed".into()), now)
        .unwrap()
        .is_some());

    on(&store, CommandName::PurgeToken, client, json!({}));
    on(&store, CommandName::PurgeToken, access, json!({}));
    p.catch_up(&store).unwrap();
    let dump = p.dump().unwrap();
    for id in [client, access] {
        assert_eq!(
            keys_containing(&dump, id.as_bytes()),
            Vec::<Vec<u8>>::new(),
            "{id}"
        );
        assert_eq!(p.get(WS, Lookup::Id(id), now).unwrap(), None);
    }
    assert!(keys_containing(&dump, fold("Doomed").as_bytes()).is_empty());
    assert!(keys_containing(&dump, b"ext-doomed").is_empty());
    assert!(keys_containing(&dump, b"google").is_empty());
    assert_eq!(p.get(WS, Lookup::Name("Doomed".into()), now).unwrap(), None);
    assert_eq!(
        p.get(WS, Lookup::ProvidedId("ext-doomed".into()), now)
            .unwrap(),
        None
    );
    // What remains: the keeper's view, name and listing entry, and the checkpoint.
    assert_eq!(dump.len(), 4, "{dump:?}");
    assert!(p.get(WS, Lookup::Id(keeper), now).unwrap().is_some());

    // The name and provided id are free again.
    let reborn = issue(
        &store,
        json!({"name": "DOOMED", "providedResourceId": "ext-doomed"}),
    );
    p.catch_up(&store).unwrap();
    let found = p
        .get(WS, Lookup::Name("doomed".into()), now)
        .unwrap()
        .unwrap();
    assert_eq!(found.token_id(), reborn);
    assert_eq!(found.version, 1);
    assert_eq!(p.dump().unwrap(), rebuilt_dump(&store, "views.check"));
    store.shutdown().unwrap();
}

#[test]
fn rename_moves_the_name_key() {
    let (_dir, _master, store) = fresh();
    let id = issue(&store, json!({"name": "Before"}));
    let mut p = projector(&store);
    on(
        &store,
        CommandName::UpdateClientToken,
        id,
        json!({"name": "After"}),
    );
    p.catch_up(&store).unwrap();
    let now = now();
    assert_eq!(p.get(WS, Lookup::Name("before".into()), now).unwrap(), None);
    let v = p
        .get(WS, Lookup::Name("AFTER".into()), now)
        .unwrap()
        .unwrap();
    assert_eq!(
        (v.token_id(), v.version, v.name.as_deref()),
        (id, 2, Some("After"))
    );
    let dump = p.dump().unwrap();
    assert!(dump
        .iter()
        .all(|(k, _)| *k != keys::name(WS, &fold("Before"))));
    assert!(dump
        .iter()
        .any(|(k, _)| *k == keys::name(WS, &fold("After"))));

    // Clearing the name removes the key; the old name can be taken by another token.
    on(
        &store,
        CommandName::UpdateClientToken,
        id,
        json!({"name": null}),
    );
    let other = issue(&store, json!({"name": "after"}));
    p.catch_up(&store).unwrap();
    assert_eq!(
        p.get(WS, Lookup::Name("After".into()), now)
            .unwrap()
            .map(|v| v.token_id()),
        Some(other)
    );
    let v = p.get(WS, Lookup::Id(id), now).unwrap().unwrap();
    assert_eq!(v.name, None);
    let names = p
        .dump()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k[0] == keys::NAME)
        .count();
    assert_eq!(names, 1);
    store.shutdown().unwrap();
}

#[test]
fn restart_resumes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let master = ledger_crypto::MasterKey::generate();
    let store = open_store(dir.path(), &master);
    let a = issue(&store, json!({"name": "a"}));
    let b = issue(&store, json!({"name": "b"}));
    register(&store, USER, "google", "a@example.com");
    let p = projector(&store);
    let checkpoint = p.checkpoint();
    assert_eq!(checkpoint, store.head_position());
    let before = p.dump().unwrap();
    // The tree keeps a reference to the database: drop it before reopening.
    drop(p);
    store.shutdown().unwrap();
    drop(store);

    let store = open_store(dir.path(), &master);
    let mut p = Projector::open(store.db()).unwrap();
    assert_eq!(p.checkpoint(), checkpoint);
    assert_eq!(p.checkpoint(), store.head_position());
    // Nothing to apply: the same bytes, the same checkpoint.
    assert_eq!(p.catch_up(&store).unwrap(), checkpoint);
    assert_eq!(p.dump().unwrap(), before);

    // More events after the restart fold onto the stored views (the cache is
    // empty, so prior states are refolded from the log).
    on(
        &store,
        CommandName::UpdateClientToken,
        a,
        json!({"name": "a2"}),
    );
    on(&store, CommandName::PurgeToken, b, json!({"force": true}));
    let c = issue(&store, json!({"name": "b"}));
    assert_eq!(p.catch_up(&store).unwrap(), checkpoint + 3);
    let now = now();
    assert_eq!(
        p.get(WS, Lookup::Name("a2".into()), now)
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(p.get(WS, Lookup::Name("a".into()), now).unwrap(), None);
    assert_eq!(p.get(WS, Lookup::Id(b), now).unwrap(), None);
    assert_eq!(
        p.get(WS, Lookup::Name("b".into()), now)
            .unwrap()
            .map(|v| v.token_id()),
        Some(c)
    );
    assert_eq!(p.dump().unwrap(), rebuilt_dump(&store, "views.check"));
    store.shutdown().unwrap();
}

#[test]
#[should_panic(expected = "events must start right after the checkpoint")]
fn applying_events_again_is_a_bug() {
    let (_dir, _master, store) = fresh();
    issue(&store, json!({"name": "a"}));
    let mut p = projector(&store);
    let first = store.event(1).unwrap().unwrap().envelope().unwrap();
    let _ = p.apply(&store, &[first]);
}

#[test]
fn an_interrupted_rebuild_is_cleared_on_open() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("views").unwrap();
    // Entries without a checkpoint: a rebuild that stopped half way.
    tree.insert(keys::view(&Uuid::new_v4(), 1), &b"{}"[..])
        .unwrap();
    let p = Projector::open(&db).unwrap();
    assert_eq!(p.checkpoint(), 0);
    assert!(p.dump().unwrap().is_empty());

    tree.insert(keys::CHECKPOINT, &7u64.to_be_bytes()[..])
        .unwrap();
    assert_eq!(Projector::open(&db).unwrap().checkpoint(), 7);
    tree.insert(keys::CHECKPOINT, &b"bad"[..]).unwrap();
    assert_eq!(Projector::open(&db).unwrap_err().code(), "corrupt");
}

#[test]
fn a_tree_in_the_earlier_layout_is_refolded_from_the_log() {
    let (_dir, _master, store) = fresh();
    let id = issue(&store, json!({"name": "kept"}));
    let expected = rebuilt_dump(&store, "views.check");
    // What an earlier build wrote: the view under the token id alone, the
    // index entries in the tree.
    let tree = store.db().open_tree("views").unwrap();
    let mut old_key = vec![keys::VIEW];
    old_key.extend_from_slice(id.as_bytes());
    tree.insert(old_key, &b"{}"[..]).unwrap();
    tree.insert(keys::workspace(WS, 1), id.as_bytes()).unwrap();
    tree.insert(keys::EARLIER_CHECKPOINT, &1u64.to_be_bytes()[..])
        .unwrap();
    let mut p = Projector::open(store.db()).unwrap();
    assert_eq!(p.checkpoint(), 0);
    p.catch_up(&store).unwrap();
    assert_eq!(p.dump().unwrap(), expected);
    let now = now();
    assert!(p
        .get(WS, Lookup::Name("kept".into()), now)
        .unwrap()
        .is_some());
    store.shutdown().unwrap();
}

#[test]
fn views_in_an_earlier_format_are_refolded_from_the_log() {
    let (_dir, _master, store) = fresh();
    issue(&store, json!({"name": "kept"}));
    let expected = rebuilt_dump(&store, "views.check");
    // What a build before the views' format 2 wrote: a view (here one that
    // differs from today's) under the earlier checkpoint's name.
    let tree = store.db().open_tree("views").unwrap();
    let mut p = Projector::open(store.db()).unwrap();
    p.catch_up(&store).unwrap();
    drop(p);
    for item in tree.scan_prefix([keys::VIEW]) {
        let (key, _) = item.unwrap();
        tree.insert(key, &b"{}"[..]).unwrap();
    }
    let checkpoint = tree.remove(keys::CHECKPOINT).unwrap().unwrap();
    tree.insert(keys::EARLIER_CHECKPOINT, checkpoint).unwrap();
    let mut p = Projector::open(store.db()).unwrap();
    assert_eq!(p.checkpoint(), 0);
    p.catch_up(&store).unwrap();
    assert_eq!(p.dump().unwrap(), expected);
    assert_eq!(tree.get(keys::EARLIER_CHECKPOINT).unwrap(), None);
    store.shutdown().unwrap();
}

/// A history touching every event type, with purges, name reuse, renames,
/// trash and restore, refreshes and provider moves, in two workspaces, then
/// a deterministic pseudo-random tail (rejections are simply skipped).
fn varied_history(store: &Store, mut after_each: impl FnMut(&Store)) {
    let mut step = |name: CommandName, token: Option<Uuid>, body: serde_json::Value| {
        let mut body = body;
        if let Some(t) = token {
            body.as_object_mut()
                .unwrap()
                .insert("tokenId".into(), json!(t.to_string()));
        }
        let r = store.execute_blocking(cmd(name, body));
        after_each(store);
        r.ok().map(|c| c.token_id)
    };
    let expires = now().millis() + 86_400_000;
    let t1 = step(
        CommandName::IssueClientToken,
        None,
        json!({"name": "Alpha", "providedResourceId": "ext-1", "expires": expires,
               "permissionGroups": [{"permissionGroupId": "g1"}, {"permissionGroupId": "g2"}]}),
    )
    .unwrap();
    step(
        CommandName::UpdateClientToken,
        Some(t1),
        json!({"name": "Beta"}),
    )
    .unwrap();
    step(
        CommandName::AssignPermissionGroups,
        Some(t1),
        json!({"permissionGroups": [{"permissionGroupId": "g3"}]}),
    )
    .unwrap();
    step(
        CommandName::UnassignPermissionGroups,
        Some(t1),
        json!({"permissionGroups": [{"permissionGroupId": "g1"}]}),
    )
    .unwrap();
    step(CommandName::RotateClientToken, Some(t1), json!({})).unwrap();
    step(
        CommandName::UpdateClientToken,
        Some(t1),
        json!({"expires": null}),
    )
    .unwrap();

    let t2 = step(
        CommandName::IssueClientToken,
        None,
        json!({"name": "Gamma"}),
    )
    .unwrap();
    step(
        CommandName::TrashToken,
        Some(t2),
        json!({"reason": "unused"}),
    )
    .unwrap();
    step(CommandName::RestoreToken, Some(t2), json!({})).unwrap();
    step(CommandName::TrashToken, Some(t2), json!({})).unwrap();
    step(CommandName::PurgeToken, Some(t2), json!({})).unwrap();
    step(
        CommandName::IssueClientToken,
        None,
        json!({"name": "alpha"}),
    )
    .unwrap();
    let t4 = step(
        CommandName::IssueClientToken,
        None,
        json!({"name": "GAMMA", "providedResourceId": "ext-2"}),
    )
    .unwrap();
    step(
        CommandName::RevokeToken,
        Some(t4),
        json!({"reason": "leaked"}),
    )
    .unwrap();
    let t5 = step(
        CommandName::IssueClientToken,
        None,
        json!({"name": "Delta"}),
    )
    .unwrap();
    step(CommandName::PurgeToken, Some(t5), json!({"force": true})).unwrap();

    let access = |account: &str, provider: &str| {
        json!({"user": {"id": USER}, "provider": provider, "accountName": account,
               "accessToken": "at", "refreshToken": "rt"})
    };
    let a1 = step(
        CommandName::RegisterAccessToken,
        None,
        access("one@example.com", "google"),
    )
    .unwrap();
    step(
        CommandName::RefreshAccessToken,
        Some(a1),
        json!({"accessToken": "at2"}),
    )
    .unwrap();
    step(
        CommandName::RefreshAccessToken,
        Some(a1),
        json!({"accessToken": "at3", "refreshToken": "rt3"}),
    )
    .unwrap();
    step(
        CommandName::UpdateAccessToken,
        Some(a1),
        json!({"provider": "github"}),
    )
    .unwrap();
    step(
        CommandName::UpdateAccessToken,
        Some(a1),
        json!({"accountName": "uno@example.com"}),
    )
    .unwrap();
    step(CommandName::TrashToken, Some(a1), json!({})).unwrap();
    step(
        CommandName::RegisterAccessToken,
        None,
        access("one@example.com", "google"),
    )
    .unwrap();
    step(CommandName::RestoreToken, Some(a1), json!({})).unwrap();
    let mut other = access("x@example.com", "google");
    other["workspaceId"] = json!("other");
    let a3 = step(CommandName::RegisterAccessToken, None, other).unwrap();
    step(
        CommandName::PurgeToken,
        Some(a3),
        json!({"workspaceId": "other", "force": true}),
    )
    .unwrap();
    step(
        CommandName::IssueClientToken,
        None,
        json!({"workspaceId": "other", "name": "Alpha"}),
    )
    .unwrap();

    // The tail: 200 pseudo-random commands over pools of tokens of each kind.
    let mut seed: u64 = 0x5eed_1234;
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut clients: Vec<Uuid> = vec![t1, t4];
    let mut accesses: Vec<Uuid> = vec![a1];
    for i in 0..200u64 {
        let client = clients[rand(clients.len() as u64) as usize];
        let access_token = accesses[rand(accesses.len() as u64) as usize];
        let any = if rand(2) == 0 { client } else { access_token };
        let (name, token, body) = match rand(12) {
            0 => (
                CommandName::IssueClientToken,
                None,
                json!({"name": format!("N{}", rand(40)), "providedResourceId": format!("x{}", rand(40))}),
            ),
            1 => (
                CommandName::RegisterAccessToken,
                None,
                access(
                    &format!("p{}@example.com", rand(20)),
                    ["google", "github"][rand(2) as usize],
                ),
            ),
            2 => (
                CommandName::UpdateClientToken,
                Some(client),
                json!({"name": format!("n{}", rand(40))}),
            ),
            3 => (CommandName::TrashToken, Some(any), json!({})),
            4 => (CommandName::RestoreToken, Some(any), json!({})),
            5 => (
                CommandName::PurgeToken,
                Some(any),
                json!({"force": rand(3) == 0}),
            ),
            6 => (CommandName::RotateClientToken, Some(client), json!({})),
            7 => (
                CommandName::RefreshAccessToken,
                Some(access_token),
                json!({"accessToken": format!("at{i}")}),
            ),
            8 => (CommandName::UpdateAccessToken, Some(access_token), {
                let provider = ["google", "github", "GitLab"][rand(3) as usize];
                json!({ "provider": provider })
            }),
            9 if rand(3) == 0 => (CommandName::RevokeToken, Some(any), json!({})),
            9 => (
                CommandName::UnassignPermissionGroups,
                Some(client),
                json!({"permissionGroups": [{"permissionGroupId": format!("g{}", rand(5))}]}),
            ),
            10 => (
                CommandName::UpdateClientToken,
                Some(client),
                json!({"expires": now().millis() + 3_600_000 * (1 + rand(48) as i64)}),
            ),
            _ => (
                CommandName::AssignPermissionGroups,
                Some(client),
                json!({"permissionGroups": [{"permissionGroupId": format!("g{}", rand(5))}]}),
            ),
        };
        if let Some(id) = step(name, token, body) {
            match name {
                CommandName::IssueClientToken => clients.push(id),
                CommandName::RegisterAccessToken => accesses.push(id),
                _ => {}
            }
        }
    }
}

fn apply_in_chunks(p: &mut Projector, store: &Store, chunk: usize) {
    loop {
        let stored = store.read_from(p.checkpoint() + 1, chunk).unwrap();
        if stored.is_empty() {
            break;
        }
        let events: Vec<Envelope> = stored.iter().map(|s| s.envelope().unwrap()).collect();
        p.apply(store, &events).unwrap();
    }
}

#[test]
fn rebuild_equals_incremental_byte_for_byte() {
    let (_dir, _master, store) = fresh();
    let db = store.db().clone();
    // Caught up after every command, its in-memory index loaded from the
    // start (by `dump`) and kept up to date batch by batch.
    let mut each = Projector::open_tree(db.open_tree("views.each").unwrap()).unwrap();
    assert!(each.dump().unwrap().is_empty());
    // Reopened before every catch-up: every prior state is refolded from the log.
    let cold_tree = db.open_tree("views.cold").unwrap();
    let mut step = 0u64;
    varied_history(&store, |store| {
        each.catch_up(store).unwrap();
        step += 1;
        if step.is_multiple_of(5) {
            let mut cold = Projector::open_tree(cold_tree.clone()).unwrap();
            cold.catch_up(store).unwrap();
        }
    });
    let mut cold = Projector::open_tree(cold_tree).unwrap();
    cold.catch_up(&store).unwrap();
    // Everything in one batch: many events per token in a single apply.
    let mut once = Projector::open_tree(db.open_tree("views.once").unwrap()).unwrap();
    once.catch_up(&store).unwrap();
    // Odd chunk sizes, so batches split a token's events.
    let mut chunked = Projector::open_tree(db.open_tree("views.chunked").unwrap()).unwrap();
    apply_in_chunks(&mut chunked, &store, 7);

    let head = store.head_position();
    assert!(head > 100, "the history is long enough ({head})");
    let rebuilt = Projector::rebuild(&store, db.open_tree("views.rebuilt").unwrap()).unwrap();
    assert_eq!(rebuilt.checkpoint(), head);
    let expected = rebuilt.dump().unwrap();
    assert!(expected.iter().any(|(k, _)| k[0] == keys::USER));
    assert!(expected.iter().any(|(k, _)| k[0] == keys::PROVIDED_ID));
    // The index built from the stored views equals the one kept up to date.
    let reopened = Projector::open_tree(db.open_tree("views.each").unwrap()).unwrap();
    for (name, p) in [
        ("each", &each),
        ("each, reopened", &reopened),
        ("cold", &cold),
        ("once", &once),
        ("chunked", &chunked),
    ] {
        assert_eq!(p.checkpoint(), head, "{name}");
        let dump = p.dump().unwrap();
        assert_eq!(dump.len(), expected.len(), "{name}");
        assert!(dump == expected, "{name} differs from the rebuild");
    }

    // A rebuilt projector carries on incrementally like any other, and a
    // second rebuild over a used tree gives the same bytes again.
    let mut rebuilt = rebuilt;
    let id = issue(&store, json!({"name": "after-rebuild"}));
    on(
        &store,
        CommandName::UpdateClientToken,
        id,
        json!({"name": "after-rebuild-2"}),
    );
    rebuilt.catch_up(&store).unwrap();
    each.catch_up(&store).unwrap();
    assert!(rebuilt.dump().unwrap() == each.dump().unwrap());
    let again = Projector::rebuild(&store, db.open_tree("views.rebuilt").unwrap()).unwrap();
    assert!(again.dump().unwrap() == each.dump().unwrap());
    store.shutdown().unwrap();
}

#[test]
fn a_separate_views_handle_follows_the_tree() {
    let (_dir, _master, store) = fresh();
    issue(&store, json!({"name": "first"}));
    let mut p = projector(&store);
    let separate = ledger_projector::Views::new(p.tree().clone());
    let now = now();
    assert!(separate
        .get(WS, Lookup::Name("first".into()), now)
        .unwrap()
        .is_some());
    // Its index was built at the old checkpoint; the tree moved since.
    let second = issue(&store, json!({"name": "second"}));
    on(
        &store,
        CommandName::UpdateClientToken,
        second,
        json!({"name": "third"}),
    );
    p.catch_up(&store).unwrap();
    let found = |name: &str| {
        separate
            .get(WS, Lookup::Name(name.into()), now)
            .unwrap()
            .map(|v| v.token_id())
    };
    assert_eq!(found("third"), Some(second));
    assert_eq!(found("second"), None);
    assert_eq!(
        p.views()
            .list(WS, &Default::default(), now)
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        separate
            .list(WS, &Default::default(), now)
            .unwrap()
            .items
            .len(),
        2
    );
    store.shutdown().unwrap();
}

#[test]
fn rebuild_of_an_empty_log_is_empty() {
    let (_dir, _master, store) = fresh();
    let p = Projector::rebuild(&store, store.db().open_tree("views").unwrap()).unwrap();
    assert_eq!(p.checkpoint(), 0);
    assert!(p.dump().unwrap().is_empty());
    let mut idle = Projector::open(store.db()).unwrap();
    assert_eq!(idle.catch_up(&store).unwrap(), 0);
    assert!(idle.dump().unwrap().is_empty());
    store.shutdown().unwrap();
}

#[test]
fn rebuild_spans_many_chunks() {
    // More events than one rebuild chunk (2048), so several workers decode
    // and the folder interleaves their chunks.
    let (_dir, _master, store) = fresh();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..170 {
                    let id = issue(&store, json!({"name": format!("c{t}-{i}")}));
                    if i % 2 == 0 {
                        on(
                            &store,
                            CommandName::UpdateClientToken,
                            id,
                            json!({"name": format!("d{t}-{i}")}),
                        );
                    } else {
                        on(&store, CommandName::PurgeToken, id, json!({"force": true}));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.head_position(), 8 * 170 * 2);
    let p = projector(&store);
    assert!(p.dump().unwrap() == rebuilt_dump(&store, "views.check"));
    store.shutdown().unwrap();
}
