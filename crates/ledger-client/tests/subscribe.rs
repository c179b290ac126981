//! Subscribers on the stream `TOKENS`, fed by a real ledger server: every
//! change once and in order, resuming at a position, filters, a NATS
//! restart, and tampered events.
//!
//! "Nothing else arrived" is checked with a marker: after the expected
//! events, one more command is sent, and the next item must be its event.

mod common;

use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use ledger_client::{
    AssignPermissionGroups, Client, ClientError, EventFilter, EventType, IssueClientToken, Patch,
    PurgeToken, RefreshAccessToken, RegisterAccessToken, RestoreToken, RevokeToken,
    RotateClientToken, StartFrom, Subscription, TrashToken, TypedCommand, UnassignPermissionGroups,
    UpdateAccessToken, UpdateClientToken,
};
use ledger_core::Envelope;
use ledger_testkit::trash_restore_chain;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Commands producing one event of each of the 12 types, in catalogue order,
/// on a client token and an access token of `ws`. Returns both ids.
async fn all_twelve(c: &Client, ws: &str) -> (Uuid, Uuid) {
    let a = c
        .issue_client_token(
            ws,
            IssueClientToken {
                name: Some(format!("t-{}", Uuid::new_v4())),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .token
        .unwrap()
        .token_id();
    c.update_client_token(
        ws,
        UpdateClientToken {
            expires: Patch::Set(4_102_444_800_000),
            ..UpdateClientToken::new(a)
        },
    )
    .await
    .unwrap();
    c.assign_permission_groups(
        ws,
        AssignPermissionGroups {
            token_id: a,
            permission_groups: vec!["g1".into()],
        },
    )
    .await
    .unwrap();
    c.unassign_permission_groups(
        ws,
        UnassignPermissionGroups {
            token_id: a,
            permission_groups: vec!["g1".into()],
        },
    )
    .await
    .unwrap();
    c.rotate_client_token(ws, RotateClientToken { token_id: a })
        .await
        .unwrap();
    let b = c
        .register_access_token(
            ws,
            RegisterAccessToken {
                id: None,
                user_id: Uuid::new_v4(),
                provider: "google".into(),
                account_name: "u@example.com".into(),
                access_token: "secret".into(),
                refresh_token: None,
            },
        )
        .await
        .unwrap()
        .token
        .unwrap()
        .token_id();
    c.refresh_access_token(
        ws,
        RefreshAccessToken {
            token_id: b,
            access_token: "secret-2".into(),
            refresh_token: Some("refresh".into()),
        },
    )
    .await
    .unwrap();
    c.update_access_token(
        ws,
        UpdateAccessToken {
            token_id: b,
            account_name: Some("v@example.com".into()),
            provider: None,
        },
    )
    .await
    .unwrap();
    c.trash_token(
        ws,
        TrashToken {
            token_id: a,
            reason: Some("test".into()),
        },
    )
    .await
    .unwrap();
    c.restore_token(ws, RestoreToken { token_id: a })
        .await
        .unwrap();
    c.revoke_token(
        ws,
        RevokeToken {
            token_id: b,
            reason: None,
        },
    )
    .await
    .unwrap();
    c.purge_token(
        ws,
        PurgeToken {
            token_id: a,
            force: true,
        },
    )
    .await
    .unwrap();
    (a, b)
}

/// Issues a token in `ws` and returns the position of its event.
async fn marker(c: &Client, ws: &str) -> u64 {
    c.issue_client_token(ws, IssueClientToken::default())
        .await
        .unwrap()
        .positions[0]
}

/// Checks a sequence of events: positions strictly increasing, and per
/// token, versions strictly increasing; no event twice.
fn assert_ordered_once(events: &[Envelope]) {
    let mut ids = HashSet::new();
    let mut versions: HashMap<Uuid, u64> = HashMap::new();
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "out of order: {pair:?}"
        );
    }
    for e in events {
        assert!(ids.insert(e.event_id), "twice: {e:?}");
        let v = versions.entry(e.token_id).or_insert(0);
        assert!(e.version > *v, "version order broken: {e:?}");
        *v = e.version;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_every_change_once_and_in_order() {
    let env = Env::start().await;
    let c = &env.client;
    let mut live = c
        .subscribe(EventFilter::all(), StartFrom::New)
        .await
        .unwrap();

    all_twelve(c, WS).await;
    let seen = take_events(&mut live, 12).await;
    let log = log_from(&env.store, 1);
    assert_eq!(seen, log, "the live subscriber sees exactly the log");
    let types: Vec<EventType> = seen.iter().map(Envelope::event_type).collect();
    assert_eq!(types, EventType::ALL, "each of the 12 types, in order");

    // Concurrent commands: still each once, in position order, gap-free.
    let issued = join_all((0..40).map(|i| {
        c.issue_client_token(
            WS,
            IssueClientToken {
                provided_resource_id: Some(format!("user-{i}")),
                ..Default::default()
            },
        )
    }))
    .await;
    assert!(issued.iter().all(Result::is_ok));
    let burst = take_events(&mut live, 40).await;
    assert_ordered_once(&burst);
    assert_eq!(
        burst.iter().map(|e| e.position).collect::<Vec<_>>(),
        (13..=52).collect::<Vec<_>>()
    );
    let m = marker(c, WS).await;
    next_is(&mut live, m).await;
    assert_eq!(live.next_position(), m + 1);

    // A late subscriber replays the same history from the start.
    let mut replay = c
        .subscribe(EventFilter::all(), StartFrom::Start)
        .await
        .unwrap();
    let all = take_events(&mut replay, m as usize).await;
    assert_eq!(all, log_from(&env.store, 1));
    let m2 = marker(c, WS).await;
    next_is(&mut replay, m2).await;
    next_is(&mut live, m2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_from_a_position_resumes_exactly_there() {
    let env = Env::start().await;
    let c = &env.client;
    all_twelve(c, WS).await;

    let mut sub = c
        .subscribe(EventFilter::all(), StartFrom::Position(5))
        .await
        .unwrap();
    let first = take_events(&mut sub, 4).await;
    assert_eq!(
        first.iter().map(|e| e.position).collect::<Vec<_>>(),
        [5, 6, 7, 8]
    );
    assert_eq!(sub.next_position(), 9);
    let resume = sub.resume_from();
    drop(sub);

    // Events keep coming while nobody listens.
    let m1 = marker(c, WS).await;
    let mut sub = c.subscribe(EventFilter::all(), resume).await.unwrap();
    let rest = take_events(&mut sub, 5).await;
    assert_eq!(
        rest.iter().map(|e| e.position).collect::<Vec<_>>(),
        [9, 10, 11, 12, m1]
    );
    assert_eq!(rest, log_from(&env.store, 9));
    let m2 = marker(c, WS).await;
    next_is(&mut sub, m2).await;

    // A position past the head waits for it.
    let mut ahead = c
        .subscribe(EventFilter::all(), StartFrom::Position(m2 + 2))
        .await
        .unwrap();
    marker(c, WS).await;
    let m4 = marker(c, WS).await;
    next_is(&mut ahead, m4).await;
}

/// Takes items until the event at `position`, which must match; returns
/// the events before it. Error items fail the test unless they are
/// JetStream interruptions (which a subscription reports and recovers from).
async fn until(sub: &mut Subscription, position: u64) -> (Vec<Envelope>, usize) {
    let mut events = Vec::new();
    let mut interruptions = 0;
    loop {
        let item = within(&format!("the event at {position}"), sub.next())
            .await
            .expect("a subscription never ends");
        match item {
            Ok(e) if e.position == position => return (events, interruptions),
            Ok(e) => {
                assert!(e.position < position, "{e:?} came before {position}");
                events.push(e);
            }
            Err(ClientError::JetStream(_)) => interruptions += 1,
            Err(e) => panic!("unexpected error item: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_by_workspace_token_and_type() {
    let env = Env::start().await;
    let c = &env.client;
    let (_, b) = all_twelve(c, WS).await;
    all_twelve(c, "other").await;
    all_twelve(c, WS).await;
    let log = log_from(&env.store, 1);
    let expect = |keep: &dyn Fn(&Envelope) -> bool| -> Vec<Envelope> {
        log.iter().filter(|e| keep(e)).cloned().collect()
    };

    // By workspace.
    let mut acme = c
        .subscribe(EventFilter::all().workspace(WS), StartFrom::Start)
        .await
        .unwrap();
    let m = marker(c, WS).await;
    let (seen, _) = until(&mut acme, m).await;
    assert_eq!(seen.len(), 24);
    assert_eq!(seen, expect(&|e| e.workspace_id == WS));

    // By token.
    let mut one = c
        .subscribe(EventFilter::all().token(b), StartFrom::Start)
        .await
        .unwrap();
    let seen = take_events(&mut one, 4).await;
    assert_eq!(seen, expect(&|e| e.token_id == b));
    assert_eq!(
        seen.iter().map(Envelope::event_type).collect::<Vec<_>>(),
        [
            EventType::AccessTokenRegistered,
            EventType::AccessTokenRefreshed,
            EventType::AccessTokenUpdated,
            EventType::TokenRevoked,
        ]
    );
    marker(c, WS).await; // another token's: not delivered
    let trashed = c
        .trash_token(
            WS,
            TrashToken {
                token_id: b,
                reason: None,
            },
        )
        .await
        .unwrap();
    let e = next_is(&mut one, trashed.positions[0]).await;
    assert_eq!((e.token_id, e.version), (b, 5));

    // By type, across workspaces.
    let types = [EventType::TokenTrashed, EventType::TokenRevoked];
    let mut some = c
        .subscribe(EventFilter::all().types(types), StartFrom::Start)
        .await
        .unwrap();
    // Six from the three rounds, and the trash of b just above.
    let expected: Vec<Envelope> = log_from(&env.store, 1)
        .into_iter()
        .filter(|e| types.contains(&e.event_type()))
        .collect();
    assert_eq!(expected.len(), 7);
    let seen = take_events(&mut some, 7).await;
    assert_eq!(seen, expected);
    let fresh = c
        .issue_client_token(WS, IssueClientToken::default())
        .await
        .unwrap()
        .token
        .unwrap()
        .token_id();
    let t = c
        .trash_token(
            WS,
            TrashToken {
                token_id: fresh,
                reason: None,
            },
        )
        .await
        .unwrap();
    next_is(&mut some, t.positions[0]).await;

    // Workspace and type together.
    let mut purges = c
        .subscribe(
            EventFilter::all()
                .workspace("other")
                .types([EventType::TokenPurged]),
            StartFrom::Start,
        )
        .await
        .unwrap();
    let seen = take_events(&mut purges, 1).await;
    assert_eq!(seen[0].position, 24);
    let doomed = c
        .issue_client_token("other", IssueClientToken::default())
        .await
        .unwrap()
        .token
        .unwrap()
        .token_id();
    c.issue_client_token(WS, IssueClientToken::default())
        .await
        .unwrap();
    let p = c
        .purge_token(
            "other",
            PurgeToken {
                token_id: doomed,
                force: true,
            },
        )
        .await
        .unwrap();
    next_is(&mut purges, p.positions[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_across_a_nats_server_restart() {
    let mut env = Env::start().await;
    let c = env.client.clone();
    all_twelve(&c, WS).await;
    let mut sub = c
        .subscribe(EventFilter::all().workspace(WS), StartFrom::Position(3))
        .await
        .unwrap();
    let before = take_events(&mut sub, 10).await;
    assert_eq!(before, log_from(&env.store, 3));

    // Stop and restart nats-server on the same port and store.
    let mut nats = std::mem::replace(&mut env.nats, nats_server().await);
    let nats = tokio::task::spawn_blocking(move || {
        nats.restart().expect("restart nats-server");
        nats
    })
    .await
    .unwrap();
    let spare = std::mem::replace(&mut env.nats, nats);
    drop(spare);

    // Commands go through again once everybody has reconnected; the same
    // commandId makes retries safe.
    let positions = std::sync::Mutex::new(Vec::new());
    for i in 0..5 {
        let id = Uuid::new_v4();
        let last_err = std::sync::Mutex::new(None);
        let done = ledger_testkit::wait_for_async(DEADLINE, || {
            let (c, positions, last_err) = (c.clone(), &positions, &last_err);
            async move {
                let cmd = IssueClientToken {
                    provided_resource_id: Some(format!("after-{i}")),
                    ..Default::default()
                }
                .command_id(id);
                match c.issue_client_token(WS, cmd).await {
                    Ok(r) => {
                        positions.lock().unwrap().push(r.positions[0]);
                        true
                    }
                    Err(e) => {
                        assert!(e.is_transport(), "{e}");
                        *last_err.lock().unwrap() = Some(e);
                        false
                    }
                }
            }
        })
        .await;
        assert!(done, "command {i} never went through: {last_err:?}");
    }
    let positions = positions.into_inner().unwrap();
    assert_eq!(positions, [13, 14, 15, 16, 17]);

    let (after, _interruptions) = until(&mut sub, 17).await;
    assert_eq!(
        after.iter().map(|e| e.position).collect::<Vec<_>>(),
        [13, 14, 15, 16],
        "nothing missed, nothing repeated"
    );
    let m = marker(&c, WS).await;
    let (between, _) = until(&mut sub, m).await;
    assert!(between.is_empty(), "{between:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_event_is_an_error_item_and_the_rest_still_flows() {
    // A stream written by hand (no ledger server): the third event's body
    // was changed after its hash was computed.
    let nats = nats_server().await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw);
    js.create_stream(ledger_nats::StreamSettings::default().config())
        .await
        .unwrap();
    let events = trash_restore_chain(4);
    for (i, e) in events.iter().enumerate() {
        let mut body = e.to_json_value();
        if i == 2 {
            body["data"]["reason"] = "tampered".into();
        }
        let subject = format!(
            "tokens.evt.{}.{}.{}",
            e.workspace_id,
            e.token_id,
            e.event_type()
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
        js.publish_with_headers(subject, headers, serde_json::to_vec(&body).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let client = connect(&nats.url()).await;
    let mut sub = client
        .subscribe(EventFilter::all(), StartFrom::Start)
        .await
        .unwrap();
    let got: Vec<Result<Envelope, ClientError>> =
        within("four items", sub.by_ref().take(4).collect()).await;
    assert_eq!(got[0].as_ref().unwrap(), &events[0]);
    assert_eq!(got[1].as_ref().unwrap(), &events[1]);
    match &got[2] {
        Err(ClientError::BadEvent {
            sequence: 3,
            reason,
        }) => {
            assert!(reason.contains("recompute"), "{reason}")
        }
        other => panic!("expected a bad event at 3, got {other:?}"),
    }
    assert_eq!(got[3].as_ref().unwrap(), &events[3]);
    assert_eq!(sub.next_position(), 5);

    // History checks hashes the same way; subscribing needs the stream.
    let empty = nats_server().await;
    let nobody = connect(&empty.url()).await;
    let err = nobody
        .subscribe(EventFilter::all(), StartFrom::New)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "jetstream");
    let err = nobody
        .subscribe(EventFilter::all().workspace("a.b"), StartFrom::Start)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
}
