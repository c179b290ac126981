//! Replies that would not fit in one NATS message, and events a stream no
//! longer holds: both must reach the caller as pages or as an error item,
//! never as silence (a reply over `max_payload` is dropped by NATS, and the
//! caller would see a timeout).

mod common;

use common::*;
use futures_util::StreamExt;
use ledger_client::{
    AssignPermissionGroups, ClientError, EventFilter, IssueClientToken, ListQuery, LocalVerifier,
    RevokeToken, StartFrom, UnassignPermissionGroups,
};
use std::collections::HashSet;
use uuid::Uuid;

/// A small `max_payload`, so that a few dozen tokens overflow one reply.
const MAX_PAYLOAD: usize = 32 * 1024;

/// Ten group ids of 36 characters each: about a kilobyte per view.
fn groups() -> Vec<String> {
    (0..10).map(|_| Uuid::new_v4().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_cut_to_fit_in_one_message_and_the_cursors_reach_everything() {
    let env = Env::start_with_max_payload(MAX_PAYLOAD).await;
    let c = &env.client;
    let mut issued = HashSet::new();
    for i in 0..60 {
        let token = issue(
            c,
            IssueClientToken {
                name: Some(format!("t{i}")),
                permission_groups: groups(),
                ..Default::default()
            },
        )
        .await;
        issued.insert(token);
    }

    // `list`: 60 views are about twice the limit; a page asks for 100.
    let mut listed = HashSet::new();
    let mut pages = 0;
    let mut cursor = None;
    loop {
        let page = within(
            "a list page",
            c.list(
                WS,
                &ListQuery {
                    limit: Some(100),
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        pages += 1;
        for view in page.items {
            assert!(listed.insert(view.token_id()), "listed twice");
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, issued);
    assert!(pages >= 2, "one page held it all: the limit did not bite");

    // `tokens.snapshot`, of the workspace and of every workspace.
    for workspace in [Some(WS), None] {
        let mut seen = HashSet::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = within(
                "a snapshot page",
                c.snapshot(workspace, cursor.as_deref(), None),
            )
            .await
            .unwrap();
            pages += 1;
            seen.extend(page.tokens.iter().map(|s| s.token_id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, issued, "snapshot of {workspace:?}");
        assert!(pages >= 2, "snapshot of {workspace:?} in one page");
    }

    // The local verifier starts from those pages.
    let verifier = within(
        "the local verifier",
        LocalVerifier::start(c.clone(), Some(WS)),
    )
    .await
    .unwrap();
    assert_eq!(verifier.token_count(), issued.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_comes_in_pages_and_the_client_follows_them() {
    let env = Env::start_with_max_payload(MAX_PAYLOAD).await;
    let c = &env.client;
    let token = issue(c, IssueClientToken::default()).await;
    for _ in 0..20 {
        let added = groups();
        c.assign_permission_groups(
            WS,
            AssignPermissionGroups {
                token_id: token,
                permission_groups: added.clone(),
            },
        )
        .await
        .unwrap();
        c.unassign_permission_groups(
            WS,
            UnassignPermissionGroups {
                token_id: token,
                permission_groups: added,
            },
        )
        .await
        .unwrap();
    }
    // A caller that does not ask for pages gets no first page passed off as
    // the whole history, but an error saying to page.
    let whole = async_nats::connect(env.nats.url())
        .await
        .unwrap()
        .request(
            format!("tokens.query.{WS}.history"),
            serde_json::json!({ "tokenId": token.to_string() })
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let whole: serde_json::Value = serde_json::from_slice(&whole.payload).unwrap();
    assert_eq!(whole["error"]["field"], "fromVersion", "{whole}");
    let history = within("history", c.history(WS, token)).await.unwrap();
    let versions: Vec<u64> = history.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=41).collect::<Vec<u64>>());
    let bytes: usize = history
        .iter()
        .map(|e| e.to_json_value().to_string().len())
        .sum();
    assert!(bytes > MAX_PAYLOAD, "{bytes} bytes fit in one reply anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_gone_from_the_stream_are_an_error_item_not_a_silent_skip() {
    let env = Env::start().await;
    let c = &env.client;
    let revoked = issue(c, IssueClientToken::default()).await;
    // An operator caps the stream, dropping the oldest messages (the
    // ledger leaves such settings alone).
    ledger_testkit::cap_tokens_stream(&env.nats.url(), Some(5), false).await;
    c.revoke_token(
        WS,
        RevokeToken {
            token_id: revoked,
            reason: None,
        },
    )
    .await
    .unwrap();
    for _ in 0..10 {
        c.issue_client_token(WS, IssueClientToken::default())
            .await
            .unwrap();
    }
    env.wait_published().await;
    let head = env.store.head_position();
    let first = head - 4;

    // Everything from position 1: the gap first, then what is kept.
    let mut all = c
        .subscribe(EventFilter::all(), StartFrom::Position(1))
        .await
        .unwrap();
    match within("the first item", all.next()).await {
        Some(Err(ClientError::EventsGone { from: 1, to })) => assert_eq!(to, first - 1),
        other => panic!("expected events_gone, got {other:?}"),
    }
    for position in first..=head {
        let env = within("an event", all.next()).await.unwrap().unwrap();
        assert_eq!(env.position, position);
    }

    // Filtered on the revoked token, whose events are all gone: the gap,
    // where a silent skip would have shown nothing at all.
    let mut one = c
        .subscribe(EventFilter::all().token(revoked), StartFrom::Position(1))
        .await
        .unwrap();
    match within("the first item", one.next()).await {
        Some(Err(e)) => assert_eq!(e.code(), "events_gone", "{e}"),
        other => panic!("expected events_gone, got {other:?}"),
    }
    assert_eq!(one.next_position(), first);
}

/// A command whose token view would not fit in one reply is answered
/// without the view, still naming the token and the positions it appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_for_its_view_still_names_the_token() {
    let env = Env::start_with_max_payload(MAX_PAYLOAD).await;
    let c = &env.client;
    let long_groups = || -> Vec<String> {
        (0..128)
            .map(|_| format!("{:a>190}", Uuid::new_v4()))
            .collect()
    };
    let token = issue(
        c,
        IssueClientToken {
            permission_groups: long_groups(),
            ..Default::default()
        },
    )
    .await;
    let answer = c
        .assign_permission_groups(
            WS,
            AssignPermissionGroups {
                token_id: token,
                permission_groups: long_groups(),
            },
        )
        .await
        .unwrap();
    assert!(answer.token.is_none(), "the view fits after all");
    assert_eq!(answer.token_id, Some(token));
    assert_eq!(answer.positions, [2]);
}
