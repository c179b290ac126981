//! Every command through the typed client against a real nats-server and an
//! in-process ledger server: typed results, typed rejections, idempotency,
//! and transport errors told apart from refusals.

mod common;

use common::*;
use ledger_client::{
    AssignPermissionGroups, ClientError, CommandName, CommandOptions, ErrorCode, GetBy, IfExists,
    IssueClientToken, Patch, PurgeToken, RefreshAccessToken, RegisterAccessToken, RestoreToken,
    RevokeToken, RotateClientToken, TokenKind, TokenView, TrashToken, TypedCommand,
    UnassignPermissionGroups, UpdateAccessToken, UpdateClientToken,
};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const FAR_FUTURE_MS: i64 = 4_102_444_800_000;

fn token(r: &ledger_client::CommandResult) -> &TokenView {
    r.token.as_ref().expect("a view")
}

/// The rejection of a refused call, checking it is one (not transport trouble).
fn rejection(e: ClientError) -> ledger_client::Rejection {
    assert!(!e.is_transport(), "{e}");
    match e {
        ClientError::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_the_typed_client() {
    let env = Env::start().await;
    let c = &env.client;

    // issue_client_token: the reply shows the JWT.
    let issued = c
        .issue_client_token(
            WS,
            IssueClientToken {
                name: Some("alpha".into()),
                provided_resource_id: Some("user-1".into()),
                permission_groups: vec!["g1".into()],
                expires: Some(FAR_FUTURE_MS),
                if_exists: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(issued.positions, [1]);
    let a = token(&issued);
    assert_eq!((a.version, a.name.as_deref()), (1, Some("alpha")));
    assert_eq!(a.created_by.agent_id, "alice", "the client's actor");
    assert_eq!(a.expired, Some(false));
    let first_str = a.token_str.clone().expect("issue shows tokenStr");
    assert_eq!(first_str.split('.').count(), 3, "a JWT");
    let a = a.token_id();

    // A reuse by providedResourceId returns the token and appends nothing.
    let reused = c
        .issue_client_token(
            WS,
            IssueClientToken {
                provided_resource_id: Some("user-1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(reused.positions.is_empty());
    assert_eq!(token(&reused).token_id(), a);

    // update_client_token, with expectedVersion and an actor of its own.
    let updated = c
        .update_client_token(
            WS,
            UpdateClientToken {
                name: Patch::Set("alpha-2".into()),
                ..UpdateClientToken::new(a)
            }
            .expected_version(1)
            .actor(ledger_client::Agent {
                agent_id: "bob".into(),
                agent_type: ledger_client::AgentType::User,
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.positions, [2]);
    let v = token(&updated);
    assert_eq!((v.version, v.name.as_deref()), (2, Some("alpha-2")));
    assert_eq!(v.last_updated_by.as_ref().unwrap().agent_id, "bob");
    assert!(
        v.token_str.is_none(),
        "only issue and rotate show the string"
    );

    // assign / unassign.
    let assigned = c
        .assign_permission_groups(
            WS,
            AssignPermissionGroups {
                token_id: a,
                permission_groups: vec!["g2".into(), "g3".into()],
            },
        )
        .await
        .unwrap();
    let groups = |v: &TokenView| -> Vec<String> {
        v.permission_groups
            .as_ref()
            .unwrap()
            .iter()
            .map(|g| g.permission_group_id.clone())
            .collect()
    };
    assert_eq!(groups(token(&assigned)), ["g1", "g2", "g3"]);
    assert_eq!(token(&assigned).version, 3);
    let unassigned = c
        .unassign_permission_groups(
            WS,
            UnassignPermissionGroups {
                token_id: a,
                permission_groups: vec!["g1".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(groups(token(&unassigned)), ["g2", "g3"]);

    // rotate: a new string.
    let rotated = c
        .rotate_client_token(WS, RotateClientToken { token_id: a })
        .await
        .unwrap();
    assert_eq!(token(&rotated).version, 5);
    let second_str = token(&rotated)
        .token_str
        .clone()
        .expect("rotate shows tokenStr");
    assert_ne!(second_str, first_str);

    // register / refresh / update an access token.
    let user = Uuid::new_v4();
    let registered = c
        .register_access_token(
            WS,
            RegisterAccessToken {
                id: None,
                user_id: user,
                provider: "google".into(),
                account_name: "alice@example.com".into(),
                access_token: "ya29.secret".into(),
                refresh_token: Some("1//refresh".into()),
            },
        )
        .await
        .unwrap();
    let b = token(&registered);
    assert_eq!(b.kind, TokenKind::Access);
    assert_eq!(b.user.as_ref().unwrap().id, user);
    assert_eq!(b.display_name.as_deref(), Some("alice@example.com"));
    let first_fp = b.access_token_fingerprint.clone().expect("a fingerprint");
    assert!(b.access_token.is_none(), "no plaintext secret in replies");
    let b = b.token_id();
    let refreshed = c
        .refresh_access_token(
            WS,
            RefreshAccessToken {
                token_id: b,
                access_token: "ya29.new".into(),
                refresh_token: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(token(&refreshed).version, 2);
    assert_ne!(
        token(&refreshed).access_token_fingerprint.as_ref(),
        Some(&first_fp)
    );
    let moved = c
        .update_access_token(
            WS,
            UpdateAccessToken {
                token_id: b,
                account_name: Some("alice@work.example".into()),
                provider: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        token(&moved).account_name.as_deref(),
        Some("alice@work.example")
    );

    // trash / restore, and an idempotent retry of a commandId.
    let retry_id = Uuid::new_v4();
    let trash = TrashToken {
        token_id: a,
        reason: Some("leaked".into()),
    };
    let trashed = c
        .trash_token(WS, trash.clone().command_id(retry_id))
        .await
        .unwrap();
    let t = token(&trashed).trash_item.as_ref().expect("trashItem");
    assert_eq!(t.reason.as_deref(), Some("leaked"));
    let head = env.store.head_position();
    let again = c.trash_token(WS, trash.command_id(retry_id)).await.unwrap();
    assert_eq!(again.positions, trashed.positions, "the first result again");
    assert_eq!(env.store.head_position(), head, "nothing appended");
    let restored = c
        .restore_token(WS, RestoreToken { token_id: a })
        .await
        .unwrap();
    assert!(token(&restored).trash_item.is_none());

    // revoke.
    let revoked = c
        .revoke_token(
            WS,
            RevokeToken {
                token_id: b,
                reason: None,
            },
        )
        .await
        .unwrap();
    assert!(token(&revoked).revoked);

    // purge: no view left; the token is gone for queries.
    let purged = c
        .purge_token(
            WS,
            PurgeToken {
                token_id: a,
                force: true,
            },
        )
        .await
        .unwrap();
    assert!(purged.token.is_none());
    assert_eq!(purged.positions, [env.store.head_position()]);
    let gone = c.get(WS, GetBy::Id(a), None).await.unwrap_err();
    assert_eq!(gone.error_code(), Some(ErrorCode::NotFound));
    // Its name is free again.
    c.issue_client_token(
        WS,
        IssueClientToken {
            name: Some("ALPHA-2".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_with_field_and_current_version() {
    let env = Env::start().await;
    let c = &env.client;
    let a = c
        .issue_client_token(
            WS,
            IssueClientToken {
                name: Some("MyToken".into()),
                provided_resource_id: Some("p-1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = token(&a).token_id();
    c.update_client_token(
        WS,
        UpdateClientToken {
            expires: Patch::Set(FAR_FUTURE_MS),
            ..UpdateClientToken::new(a)
        },
    )
    .await
    .unwrap();
    let head = env.store.head_position();

    // name_taken, case-insensitively, naming the field.
    let r = rejection(
        c.issue_client_token(
            WS,
            IssueClientToken {
                name: Some("mytoken".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::NameTaken);
    assert_eq!(r.field.as_deref(), Some("name"));

    // conflict, carrying the current version.
    let err = c
        .rotate_client_token(WS, RotateClientToken { token_id: a }.expected_version(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict");
    let r = rejection(err);
    assert_eq!(r.current_version, Some(2));
    assert_eq!(r.field.as_deref(), Some("expectedVersion"));

    // provided_id_taken with ifExists: fail.
    let r = rejection(
        c.issue_client_token(
            WS,
            IssueClientToken {
                provided_resource_id: Some("p-1".into()),
                if_exists: Some(IfExists::Fail),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::ProvidedIdTaken);
    assert_eq!(r.field.as_deref(), Some("providedResourceId"));

    // account_taken.
    let user = Uuid::new_v4();
    let register = RegisterAccessToken {
        id: None,
        user_id: user,
        provider: "google".into(),
        account_name: "a@example.com".into(),
        access_token: "t".into(),
        refresh_token: None,
    };
    let b = c.register_access_token(WS, register.clone()).await.unwrap();
    let b = token(&b).token_id();
    let head_b = env.store.head_position();
    let r = rejection(c.register_access_token(WS, register).await.unwrap_err());
    assert_eq!(r.code, ErrorCode::AccountTaken);
    assert_eq!(r.field.as_deref(), Some("accountName"));

    // not_trashed, trashed, revoked, not_found.
    let r = rejection(
        c.restore_token(WS, RestoreToken { token_id: a })
            .await
            .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::NotTrashed);
    let r = rejection(
        c.purge_token(
            WS,
            PurgeToken {
                token_id: a,
                force: false,
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::NotTrashed);
    c.trash_token(
        WS,
        TrashToken {
            token_id: b,
            reason: None,
        },
    )
    .await
    .unwrap();
    let r = rejection(
        c.trash_token(
            WS,
            TrashToken {
                token_id: b,
                reason: None,
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::Trashed);
    c.revoke_token(
        WS,
        RevokeToken {
            token_id: b,
            reason: None,
        },
    )
    .await
    .unwrap();
    let r = rejection(
        c.restore_token(WS, RestoreToken { token_id: b })
            .await
            .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::Revoked);
    let r = rejection(
        c.rotate_client_token(
            WS,
            RotateClientToken {
                token_id: Uuid::new_v4(),
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (r.code, r.field.as_deref()),
        (ErrorCode::NotFound, Some("tokenId"))
    );
    // The same token from another workspace is not found either.
    let r = rejection(
        c.rotate_client_token("other", RotateClientToken { token_id: a })
            .await
            .unwrap_err(),
    );
    assert_eq!(r.code, ErrorCode::NotFound);

    // invalid_input from the ledger, through the JSON escape hatch: a read-only field.
    let r = rejection(
        c.execute_json(
            WS,
            CommandName::UpdateClientToken,
            json!({"tokenId": a, "name": "x", "version": 9}),
            &CommandOptions::default(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (r.code, r.field.as_deref()),
        (ErrorCode::InvalidInput, Some("version"))
    );

    // Refused in the client, before sending: a workspace that is no subject token.
    let err = c
        .issue_client_token("a.b", IssueClientToken::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Invalid(_)), "{err:?}");
    assert_eq!(err.code(), "invalid_input");

    // Nothing was appended by any refusal (besides the two accepted trash and revoke).
    assert_eq!(env.store.head_position(), head_b + 2);
    assert_eq!(head + 1, head_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_not_rejections() {
    let mut env = Env::start().await;
    let url = env.nats.url();
    env.stop_server().await;

    // Nobody serves commands any more.
    let err = env
        .client
        .issue_client_token(WS, IssueClientToken::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NoResponders { .. }), "{err:?}");
    assert_eq!(err.code(), "no_responders");
    assert!(err.is_transport() && err.rejection().is_none());

    // Somebody listens but never answers: a timeout.
    let silent = async_nats::connect(&url).await.unwrap();
    let mut sub = silent.subscribe("tokens.cmd.acme.>").await.unwrap();
    silent.flush().await.unwrap();
    let impatient = ledger_client::Client::new(
        async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_millis(300)))
            .connect(&url)
            .await
            .unwrap(),
    );
    let id = Uuid::new_v4();
    let err = impatient
        .issue_client_token(WS, IssueClientToken::default().command_id(id))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert_eq!(err.code(), "timeout");
    // The request did go out, with the commandId the caller chose for a retry.
    let seen = within(
        "the silent subscriber's message",
        futures_util::StreamExt::next(&mut sub),
    )
    .await
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&seen.payload).unwrap();
    assert_eq!(body["commandId"], id.to_string());
    assert_eq!(body["workspaceId"], WS);
    assert_eq!(body["actor"]["agentType"], "service");

    // Queries too.
    let err = env
        .client
        .get(WS, GetBy::Name("x".into()), None)
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    // And connecting to nothing.
    let nowhere = format!("nats://127.0.0.1:{}", ledger_testkit::free_port());
    let err = ledger_client::Client::connect(nowhere).await.unwrap_err();
    assert_eq!(err.code(), "connect");
}
