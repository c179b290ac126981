//! Reading a token as it was: by version, position and time.

mod support;

use ledger_core::{CommandName, Timestamp};
use ledger_projector::{get_as_of, AsOf, Projector};
use serde_json::json;
use support::*;

#[test]
fn as_of_version_position_and_time() {
    let (_dir, _master, store, clock) = fresh_on_clock();
    // Commits a second apart on the store's clock, so each event has its
    // own `occurredAt`.
    let pause = || clock.advance(1_000);
    let noise = issue(&store, json!({"name": "noise"}));
    pause();
    let issued = exec(
        &store,
        CommandName::IssueClientToken,
        json!({"name": "First"}),
    );
    let id = issued.token_id;
    on(&store, CommandName::RotateClientToken, noise, json!({}));
    pause();
    let renamed = on(
        &store,
        CommandName::UpdateClientToken,
        id,
        json!({"name": "Second"}),
    );
    pause();
    let trashed = on(
        &store,
        CommandName::TrashToken,
        id,
        json!({"reason": "done"}),
    );
    pause();
    let purged = on(&store, CommandName::PurgeToken, id, json!({}));
    let p_issue = issued.positions[0];
    let p_rename = renamed.positions[0];
    let p_trash = trashed.positions[0];
    let p_purge = purged.positions[0];
    let time_of = |position: u64| -> Timestamp {
        store
            .event(position)
            .unwrap()
            .unwrap()
            .envelope()
            .unwrap()
            .occurred_at
    };

    let name_at = |as_of: AsOf| {
        get_as_of(&store, id, as_of).unwrap().map(|v| {
            (
                v.version,
                v.name.clone().unwrap_or_default(),
                v.trash_item.is_some(),
            )
        })
    };
    // By version.
    assert_eq!(name_at(AsOf::Version(0)), None);
    assert_eq!(name_at(AsOf::Version(1)), Some((1, "First".into(), false)));
    assert_eq!(name_at(AsOf::Version(2)), Some((2, "Second".into(), false)));
    assert_eq!(name_at(AsOf::Version(3)), Some((3, "Second".into(), true)));
    assert_eq!(name_at(AsOf::Version(4)), None, "purged");
    assert_eq!(name_at(AsOf::Version(9)), None, "never reached");
    // By position: another token's event in between changes nothing.
    assert_eq!(
        name_at(AsOf::Position(p_issue - 1)),
        None,
        "before creation"
    );
    assert_eq!(
        name_at(AsOf::Position(p_issue)),
        Some((1, "First".into(), false))
    );
    assert_eq!(
        name_at(AsOf::Position(p_rename - 1)),
        Some((1, "First".into(), false))
    );
    assert_eq!(
        name_at(AsOf::Position(p_rename)),
        Some((2, "Second".into(), false))
    );
    assert_eq!(
        name_at(AsOf::Position(p_trash)),
        Some((3, "Second".into(), true))
    );
    assert_eq!(name_at(AsOf::Position(p_purge)), None);
    assert_eq!(name_at(AsOf::Position(u64::MAX)), None);
    // By time.
    let before = Timestamp::from_millis(time_of(p_issue).millis() - 1).unwrap();
    assert_eq!(name_at(AsOf::Time(before)), None);
    assert_eq!(
        name_at(AsOf::Time(time_of(p_issue))),
        Some((1, "First".into(), false))
    );
    assert_eq!(
        name_at(AsOf::Time(time_of(p_trash))),
        Some((3, "Second".into(), true))
    );
    assert_eq!(name_at(AsOf::Time(time_of(p_purge))), None);

    // The current view of a live token equals its view as of its last version.
    let p = projector(&store);
    let now = time_of(store.head_position());
    let current = p
        .get(WS, ledger_projector::Lookup::Id(noise), now)
        .unwrap()
        .unwrap();
    assert_eq!(
        Projector::get_as_of(&store, noise, AsOf::Version(current.version)).unwrap(),
        Some(current.clone())
    );
    assert_eq!(
        get_as_of(&store, noise, AsOf::Position(store.head_position())).unwrap(),
        Some(current)
    );
    store.shutdown().unwrap();
}

#[test]
fn as_of_computes_expiry_at_that_point() {
    let (_dir, _master, store) = fresh();
    let expires = now().millis() + 60_000;
    let id = issue(&store, json!({"name": "short", "expires": expires}));
    let at = |ms: i64| {
        get_as_of(&store, id, AsOf::Time(Timestamp::from_millis(ms).unwrap()))
            .unwrap()
            .unwrap()
            .expired
    };
    assert_eq!(at(expires - 1), Some(false));
    assert_eq!(at(expires), Some(true));
    assert_eq!(
        get_as_of(&store, id, AsOf::Version(1))
            .unwrap()
            .unwrap()
            .expired,
        Some(false),
        "at the time of the version's event"
    );
    store.shutdown().unwrap();
}

/// As of a position, a token is judged at that position's time, whichever
/// token the event there belongs to (as `audit replay --position` does): a
/// token with no event since may have expired meanwhile.
#[test]
fn as_of_a_position_judges_expiry_at_that_positions_time() {
    let (_dir, _master, store, clock) = fresh_on_clock();
    let start = 1_768_467_600_000_i64;
    let short = issue(&store, json!({"name": "short", "expires": start + 2_000}));
    clock.advance(3_000);
    issue(&store, json!({"name": "later"}));
    let expired_at = |position: u64| {
        get_as_of(&store, short, AsOf::Position(position))
            .unwrap()
            .unwrap()
            .expired
    };
    assert_eq!(expired_at(1), Some(false), "at its own issue");
    assert_eq!(expired_at(2), Some(true), "at the next event, 3 s later");
    assert_eq!(
        expired_at(99),
        Some(true),
        "past the head: at the head's time"
    );
    store.shutdown().unwrap();
}

#[test]
fn as_of_wire_shape() {
    for (wire, as_of) in [
        (json!({"version": 3}), AsOf::Version(3)),
        (json!({"position": 42}), AsOf::Position(42)),
        (
            json!({"time": "2026-03-01T14:00:00.000Z"}),
            AsOf::Time(Timestamp::parse("2026-03-01T14:00:00Z").unwrap()),
        ),
    ] {
        assert_eq!(serde_json::from_value::<AsOf>(wire.clone()).unwrap(), as_of);
        assert_eq!(serde_json::to_value(as_of).unwrap(), wire);
    }
    // Offsets normalise to UTC.
    assert_eq!(
        serde_json::from_value::<AsOf>(json!({"time": "2026-03-01T15:00:00+01:00"})).unwrap(),
        AsOf::Time(Timestamp::parse("2026-03-01T14:00:00Z").unwrap())
    );
    for bad in [
        json!({"time": "yesterday"}),
        json!({"version": -1}),
        json!({"when": 1}),
        json!({}),
    ] {
        assert!(
            serde_json::from_value::<AsOf>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}
