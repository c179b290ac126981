//! `get` and `list` against a real store.

mod support;

use ledger_core::{CommandName, Timestamp, TokenKind};
use ledger_projector::{ListFilter, Lookup, Page, Projector, TrashedFilter};
use serde_json::json;
use std::collections::HashSet;
use support::*;
use uuid::Uuid;

fn ids(page: &Page) -> Vec<Uuid> {
    page.items.iter().map(|v| v.token_id()).collect()
}

fn set(ids: &[Uuid]) -> HashSet<Uuid> {
    ids.iter().copied().collect()
}

fn list(p: &Projector, filter: ListFilter, now: Timestamp) -> HashSet<Uuid> {
    let page = p.list(WS, &filter, now).expect("list");
    assert_eq!(page.next_cursor, None, "one page is enough here");
    set(&ids(&page))
}

#[test]
fn get_by_id_name_and_provided_id() {
    let (_dir, _master, store) = fresh();
    let id = issue(
        &store,
        json!({"name": "MyToken", "providedResourceId": "user-42", "permissionGroups": [{"permissionGroupId": "g1"}]}),
    );
    let other = issue(&store, json!({"workspaceId": "other", "name": "Elsewhere"}));
    let p = projector(&store);
    let now = now();

    let by_id = p.get(WS, Lookup::Id(id), now).unwrap().expect("by id");
    assert_eq!(by_id.token_id(), id);
    assert_eq!(by_id.name.as_deref(), Some("MyToken"));
    assert_eq!(by_id.expired, Some(false), "expired is computed when read");
    assert_eq!(by_id.version, 1);
    for name in ["MyToken", "mytoken", "MYTOKEN", "myToKen"] {
        let v = p.get(WS, Lookup::Name(name.into()), now).unwrap();
        assert_eq!(v.as_ref().map(|v| v.token_id()), Some(id), "{name}");
    }
    assert_eq!(
        p.get(WS, Lookup::ProvidedId("user-42".into()), now)
            .unwrap()
            .map(|v| v.token_id()),
        Some(id)
    );
    // Provided ids compare exactly.
    assert_eq!(
        p.get(WS, Lookup::ProvidedId("USER-42".into()), now)
            .unwrap(),
        None
    );
    assert_eq!(p.get(WS, Lookup::Name("nope".into()), now).unwrap(), None);
    assert_eq!(p.get(WS, Lookup::Id(Uuid::new_v4()), now).unwrap(), None);

    // A token of another workspace is not found, by any lookup.
    assert_eq!(p.get(WS, Lookup::Id(other), now).unwrap(), None);
    assert_eq!(
        p.get(WS, Lookup::Name("Elsewhere".into()), now).unwrap(),
        None
    );
    assert_eq!(p.get("other", Lookup::Id(id), now).unwrap(), None);
    assert_eq!(
        p.get("other", Lookup::Name("mytoken".into()), now).unwrap(),
        None
    );
    assert!(p.get("other", Lookup::Id(other), now).unwrap().is_some());

    // The stored view is exactly `TokenView::of` the state, without
    // `expired`, under the token id and its creation position.
    let (key, raw) = p
        .tree()
        .scan_prefix(ledger_projector::keys::view_prefix(&id))
        .next()
        .unwrap()
        .unwrap();
    let (key_id, created) = ledger_projector::keys::split_view_key(&key).unwrap();
    assert_eq!(key_id, id);
    assert!(created >= 1);
    let stored: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert!(stored.get("expired").is_none());
    assert_eq!(stored["resourceId"], json!(id.to_string()));
    store.shutdown().unwrap();
}

#[test]
fn list_filters_kind_trashed_revoked_expired() {
    let (_dir, _master, store) = fresh();
    let t0 = now();
    let expires = t0.millis() + 3_600_000;
    let live = issue(&store, json!({"name": "live"}));
    let trashed = issue(&store, json!({"name": "trashed"}));
    on(
        &store,
        CommandName::TrashToken,
        trashed,
        json!({"reason": "old"}),
    );
    let revoked = issue(&store, json!({"name": "revoked"}));
    on(&store, CommandName::RevokeToken, revoked, json!({}));
    let expiring = issue(&store, json!({"name": "expiring", "expires": expires}));
    let access = register(&store, USER, "google", "a@example.com");
    let trashed_access = register(&store, USER, "google", "b@example.com");
    on(&store, CommandName::TrashToken, trashed_access, json!({}));
    issue(&store, json!({"workspaceId": "other", "name": "live"}));
    let p = projector(&store);
    let later = Timestamp::from_millis(expires + 1).unwrap();

    let all_kept = set(&[live, revoked, expiring, access]);
    assert_eq!(list(&p, ListFilter::default(), t0), all_kept);
    assert_eq!(
        list(
            &p,
            ListFilter {
                trashed: TrashedFilter::Include,
                ..Default::default()
            },
            t0
        ),
        set(&[live, trashed, revoked, expiring, access, trashed_access])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                trashed: TrashedFilter::Only,
                ..Default::default()
            },
            t0
        ),
        set(&[trashed, trashed_access])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                kind: Some(TokenKind::Client),
                ..Default::default()
            },
            t0
        ),
        set(&[live, revoked, expiring])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                kind: Some(TokenKind::Access),
                trashed: TrashedFilter::Include,
                ..Default::default()
            },
            t0
        ),
        set(&[access, trashed_access])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                revoked: Some(true),
                ..Default::default()
            },
            t0
        ),
        set(&[revoked])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                revoked: Some(false),
                ..Default::default()
            },
            t0
        ),
        set(&[live, expiring, access])
    );
    // Expiry needs no event: it depends on `now` only.
    assert_eq!(
        list(
            &p,
            ListFilter {
                expired: Some(true),
                ..Default::default()
            },
            t0
        ),
        set(&[])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                expired: Some(true),
                ..Default::default()
            },
            later
        ),
        set(&[expiring])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                expired: Some(false),
                ..Default::default()
            },
            later
        ),
        set(&[live, revoked, access])
    );
    let page = p.list(WS, &ListFilter::default(), later).unwrap();
    for v in &page.items {
        assert_eq!(
            v.expired,
            Some(v.token_id() == expiring),
            "{}",
            v.token_id()
        );
    }
    assert_eq!(
        p.get(WS, Lookup::Id(expiring), later)
            .unwrap()
            .unwrap()
            .expired,
        Some(true)
    );
    store.shutdown().unwrap();
}

#[test]
fn list_by_user_and_provider_uses_the_user_index() {
    let (_dir, _master, store) = fresh();
    let user: Uuid = USER.parse().unwrap();
    let other_user: Uuid = OTHER_USER.parse().unwrap();
    let g1 = register(&store, USER, "google", "a@example.com");
    let g2 = register(&store, USER, "Google", "b@example.com");
    let gh = register(&store, USER, "github", "a@example.com");
    let other = register(&store, OTHER_USER, "google", "a@example.com");
    let client = issue(&store, json!({"name": "client"}));
    let mut p = projector(&store);
    let now = now();
    let by = |p: &Projector, user: Uuid, provider: Option<&str>| {
        list(
            p,
            ListFilter {
                user_id: Some(user),
                provider: provider.map(str::to_owned),
                ..Default::default()
            },
            now,
        )
    };

    assert_eq!(by(&p, user, None), set(&[g1, g2, gh]));
    assert_eq!(by(&p, user, Some("google")), set(&[g1, g2]));
    assert_eq!(
        by(&p, user, Some("GOOGLE")),
        set(&[g1, g2]),
        "providers fold case"
    );
    assert_eq!(by(&p, user, Some("github")), set(&[gh]));
    assert_eq!(by(&p, user, Some("gitlab")), set(&[]));
    assert_eq!(by(&p, other_user, None), set(&[other]));
    // Provider without user: the workspace listing, filtered.
    assert_eq!(
        list(
            &p,
            ListFilter {
                provider: Some("google".into()),
                ..Default::default()
            },
            now
        ),
        set(&[g1, g2, other])
    );
    assert_eq!(
        list(
            &p,
            ListFilter {
                kind: Some(TokenKind::Client),
                ..Default::default()
            },
            now
        ),
        set(&[client])
    );

    // A change of provider moves the token's user index entry.
    on(
        &store,
        CommandName::UpdateAccessToken,
        g2,
        json!({"provider": "github"}),
    );
    p.catch_up(&store).unwrap();
    assert_eq!(by(&p, user, Some("google")), set(&[g1]));
    assert_eq!(by(&p, user, Some("github")), set(&[g2, gh]));
    let u_keys = p
        .dump()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k[0] == ledger_projector::keys::USER)
        .count();
    assert_eq!(u_keys, 4, "one user index entry per access token");
    store.shutdown().unwrap();
}

#[test]
fn cursor_pagination_has_no_duplicates_and_no_gaps() {
    let (_dir, _master, store) = fresh();
    // Issued from several threads so commits are grouped; creation order is
    // whatever the log says.
    let handles: Vec<_> = (0..5)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let c = exec(
                            &store,
                            CommandName::IssueClientToken,
                            json!({"name": format!("t{t}-{i}")}),
                        );
                        (c.positions[0], c.token_id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut issued: Vec<(u64, Uuid)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    issued.sort_unstable();
    assert_eq!(issued.len(), 250);
    let p = projector(&store);
    let now = now();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = p
            .list(
                WS,
                &ListFilter {
                    limit: 100,
                    cursor,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 100);
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    // Creation order, every token once.
    assert_eq!(seen, issued.iter().map(|(_, id)| *id).collect::<Vec<_>>());

    // Exactly one full page: no cursor, no empty page after it.
    let page = p
        .list(
            WS,
            &ListFilter {
                limit: 1000,
                ..Default::default()
            },
            now,
        )
        .unwrap();
    assert_eq!(page.items.len(), 250);
    assert_eq!(page.next_cursor, None);

    // The page boundary follows matches, not entries: every 3rd token trashed.
    for (_, id) in issued.iter().step_by(3) {
        on(&store, CommandName::TrashToken, *id, json!({}));
    }
    let mut p = p;
    p.catch_up(&store).unwrap();
    for (trashed, expected) in [
        (TrashedFilter::Only, issued.iter().step_by(3).count()),
        (
            TrashedFilter::Exclude,
            250 - issued.iter().step_by(3).count(),
        ),
    ] {
        let mut seen = HashSet::new();
        let mut cursor = None;
        loop {
            let page = p
                .list(
                    WS,
                    &ListFilter {
                        limit: 7,
                        trashed,
                        cursor,
                        ..Default::default()
                    },
                    now,
                )
                .unwrap();
            for id in ids(&page) {
                assert!(seen.insert(id), "duplicate {id}");
            }
            match page.next_cursor {
                Some(c) => {
                    assert_eq!(page.items.len(), 7);
                    cursor = Some(c);
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), expected, "{trashed:?}");
    }
    store.shutdown().unwrap();
}

#[test]
fn user_index_pagination() {
    let (_dir, _master, store) = fresh();
    let user: Uuid = USER.parse().unwrap();
    let mut google = HashSet::new();
    let mut all = HashSet::new();
    for i in 0..25 {
        let provider = if i % 3 == 0 { "github" } else { "google" };
        let id = register(&store, USER, provider, &format!("u{i}@example.com"));
        all.insert(id);
        if provider == "google" {
            google.insert(id);
        }
    }
    let p = projector(&store);
    let now = now();
    for (provider, expected) in [(None, &all), (Some("google"), &google)] {
        let mut seen = HashSet::new();
        let mut cursor = None;
        loop {
            let filter = ListFilter {
                user_id: Some(user),
                provider: provider.map(str::to_owned),
                limit: 4,
                cursor,
                ..Default::default()
            };
            let page = p.list(WS, &filter, now).unwrap();
            for id in ids(&page) {
                assert!(seen.insert(id), "duplicate {id}");
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(&seen, expected, "{provider:?}");
    }
    store.shutdown().unwrap();
}

#[test]
fn malformed_cursors_and_limits_are_named_errors() {
    let (_dir, _master, store) = fresh();
    issue(&store, json!({"name": "a"}));
    issue(&store, json!({"name": "b"}));
    let p = projector(&store);
    let now = now();
    let user: Uuid = USER.parse().unwrap();
    for (cursor, user_id) in [
        ("%%%", None),
        ("AAAA", None),              // 3 bytes, not a position
        ("AAAAAAAAAAA", Some(user)), // 8 bytes, not provider NUL token id
    ] {
        let err = p
            .list(
                WS,
                &ListFilter {
                    cursor: Some(cursor.into()),
                    user_id,
                    ..Default::default()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(err.code(), "invalid_cursor", "{cursor}");
        assert!(err.is_invalid_input());
    }
    for limit in [0, 1001] {
        let err = p
            .list(
                WS,
                &ListFilter {
                    limit,
                    ..Default::default()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(err.code(), "invalid_limit");
    }
    // A cursor of one page works as the next page's start.
    let first = p
        .list(
            WS,
            &ListFilter {
                limit: 1,
                ..Default::default()
            },
            now,
        )
        .unwrap();
    assert_eq!(first.items.len(), 1);
    let second = p
        .list(
            WS,
            &ListFilter {
                limit: 1,
                cursor: first.next_cursor,
                ..Default::default()
            },
            now,
        )
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.next_cursor, None);
    assert_ne!(first.items[0].token_id(), second.items[0].token_id());
    store.shutdown().unwrap();
}

#[test]
fn wire_shapes() {
    let filter: ListFilter = serde_json::from_value(json!({
        "kind": "access",
        "userId": USER,
        "trashed": "only",
        "expired": false,
    }))
    .unwrap();
    assert_eq!(filter.kind, Some(TokenKind::Access));
    assert_eq!(filter.trashed, TrashedFilter::Only);
    assert_eq!(filter.limit, 100, "default limit");
    assert_eq!(ListFilter::default().trashed, TrashedFilter::Exclude);
    assert!(serde_json::from_value::<ListFilter>(json!({"bogus": 1})).is_err());

    let page = Page {
        items: vec![],
        next_cursor: Some("AAAAAAAAAAE".into()),
    };
    assert_eq!(
        serde_json::to_value(&page).unwrap(),
        json!({"items": [], "nextCursor": "AAAAAAAAAAE"})
    );
    let end = Page {
        items: vec![],
        next_cursor: None,
    };
    assert_eq!(
        serde_json::to_value(&end).unwrap(),
        json!({"items": [], "nextCursor": null})
    );

    let id = Uuid::new_v4();
    assert_eq!(
        serde_json::from_value::<Lookup>(json!({"tokenId": id})).unwrap(),
        Lookup::Id(id)
    );
    assert_eq!(
        serde_json::from_value::<Lookup>(json!({"name": "x"})).unwrap(),
        Lookup::Name("x".into())
    );
    assert_eq!(
        serde_json::from_value::<Lookup>(json!({"providedResourceId": "p"})).unwrap(),
        Lookup::ProvidedId("p".into())
    );
}

#[test]
fn every_after_pages_through_every_view_once_in_id_order() {
    let (_dir, _master, store) = fresh();
    let mut ids: Vec<Uuid> = (0..7)
        .map(|i| issue(&store, json!({"name": format!("t{i}")})))
        .collect();
    let p = projector(&store);
    let views = p.views();
    ids.sort();
    // By count, and by size: a budget of one byte still takes one view a page.
    for (limit, max_bytes, pages) in [(3, None, 3), (100, Some(1), 7)] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut taken = 0;
        loop {
            let (page, more) = views.every_after(after, limit, max_bytes).unwrap();
            taken += 1;
            after = page.last().map(|v| v.token_id());
            seen.extend(page.iter().map(|v| v.token_id()));
            if !more {
                break;
            }
        }
        assert_eq!(seen, ids);
        assert_eq!(taken, pages, "limit {limit}, max_bytes {max_bytes:?}");
    }
    store.shutdown().unwrap();
}
