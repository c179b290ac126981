//! Typed queries (`get`, `list`, `history`, `reveal`) against a real ledger server.

mod common;

use common::*;
use ledger_client::{
    AsOf, ErrorCode, GetBy, IssueClientToken, ListQuery, Patch, PurgeToken, RefreshAccessToken,
    RegisterAccessToken, RevokeToken, TokenKind, TrashToken, Trashed, UpdateClientToken,
};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_list_and_history() {
    let env = Env::start().await;
    let c = &env.client;
    let issue = |name: &str, provided: Option<&str>| IssueClientToken {
        name: Some(name.into()),
        provided_resource_id: provided.map(Into::into),
        ..Default::default()
    };
    let a = c
        .issue_client_token(WS, issue("alpha", Some("p-a")))
        .await
        .unwrap();
    let a = a.token.unwrap().token_id();
    c.update_client_token(
        WS,
        UpdateClientToken {
            name: Patch::Set("beta".into()),
            ..UpdateClientToken::new(a)
        },
    )
    .await
    .unwrap();
    let trashed = c
        .issue_client_token(WS, issue("gamma", None))
        .await
        .unwrap();
    let trashed = trashed.token.unwrap().token_id();
    c.trash_token(
        WS,
        TrashToken {
            token_id: trashed,
            reason: None,
        },
    )
    .await
    .unwrap();
    let user = Uuid::new_v4();
    let mut access = Vec::new();
    for provider in ["google", "github"] {
        let r = c
            .register_access_token(
                WS,
                RegisterAccessToken {
                    id: None,
                    user_id: user,
                    provider: provider.into(),
                    account_name: "u@example.com".into(),
                    access_token: "secret".into(),
                    refresh_token: None,
                },
            )
            .await
            .unwrap();
        access.push(r.token.unwrap().token_id());
    }
    // Another workspace's token never shows.
    c.issue_client_token("other", issue("beta", Some("p-a")))
        .await
        .unwrap();

    // get: by id, by name (case-insensitively), by provided id.
    let by_id = c.get(WS, GetBy::Id(a), None).await.unwrap();
    assert_eq!((by_id.name.as_deref(), by_id.version), (Some("beta"), 2));
    assert!(by_id.token_str.is_none());
    assert_eq!(
        c.get(WS, GetBy::Name("BETA".into()), None).await.unwrap(),
        by_id
    );
    assert_eq!(
        c.get(WS, GetBy::ProvidedId("p-a".into()), None)
            .await
            .unwrap(),
        by_id
    );
    let other = c
        .get("other", GetBy::Name("beta".into()), None)
        .await
        .unwrap();
    assert_ne!(other.token_id(), a);

    // get as of a version, a position, a time.
    let v1 = c
        .get(WS, GetBy::Id(a), Some(AsOf::Version(1)))
        .await
        .unwrap();
    assert_eq!((v1.name.as_deref(), v1.version), (Some("alpha"), 1));
    assert_eq!(
        c.get(WS, GetBy::Id(a), Some(AsOf::Position(1)))
            .await
            .unwrap(),
        v1
    );
    let history = c.history(WS, a).await.unwrap();
    let at = history[0].occurred_at;
    let then = c.get(WS, GetBy::Id(a), Some(AsOf::Time(at))).await.unwrap();
    assert_eq!(then.version, 1);
    // A name names the token that holds it now, shown as it was then.
    assert_eq!(
        c.get(WS, GetBy::Name("beta".into()), Some(AsOf::Version(1)))
            .await
            .unwrap(),
        v1
    );
    let err = c
        .get(WS, GetBy::Name("alpha".into()), Some(AsOf::Version(1)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.error_code(), err.rejection().unwrap().field.as_deref()),
        (Some(ErrorCode::NotFound), Some("name"))
    );
    // "alpha" was renamed away: the answer says how the name was resolved.
    let message = &err.rejection().unwrap().message;
    assert!(message.contains("holds it now"), "{message}");
    let err = c
        .get(WS, GetBy::Name("nope".into()), None)
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound));
    let err = c
        .get(WS, GetBy::Id(a), Some(AsOf::Version(9)))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound));

    // history: every envelope, in version order, hashes checked, as in the log.
    assert_eq!(
        history.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(history, env.store.token_events(&a, None).unwrap());
    let err = c.history(WS, Uuid::new_v4()).await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound));
    let err = c.history("other", a).await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound));

    // list: defaults hide the trash; filters; paging.
    let ids = |page: &ledger_client::Page| -> Vec<Uuid> {
        page.items.iter().map(|v| v.token_id()).collect()
    };
    let all = c.list(WS, &ListQuery::default()).await.unwrap();
    assert_eq!(ids(&all), [a, access[0], access[1]]);
    assert!(all.next_cursor.is_none());
    assert!(all.items.iter().all(|v| v.expired.is_some()));
    let only = ListQuery {
        trashed: Some(Trashed::Only),
        ..ListQuery::default()
    };
    assert_eq!(ids(&c.list(WS, &only).await.unwrap()), [trashed]);
    let kind = ListQuery {
        kind: Some(TokenKind::Access),
        trashed: Some(Trashed::Include),
        ..ListQuery::default()
    };
    assert_eq!(ids(&c.list(WS, &kind).await.unwrap()), access);
    let google = ListQuery {
        user_id: Some(user),
        provider: Some("GOOGLE".into()),
        ..ListQuery::default()
    };
    assert_eq!(ids(&c.list(WS, &google).await.unwrap()), [access[0]]);

    let mut paged = Vec::new();
    let mut query = ListQuery {
        limit: Some(1),
        trashed: Some(Trashed::Include),
        ..ListQuery::default()
    };
    loop {
        let page = c.list(WS, &query).await.unwrap();
        paged.extend(ids(&page));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
        assert!(paged.len() <= 4, "paging does not end: {paged:?}");
    }
    assert_eq!(paged, [a, trashed, access[0], access[1]]);

    let err = c
        .list(
            WS,
            &ListQuery {
                limit: Some(0),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.rejection().unwrap().field.as_deref(), Some("limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveal_hands_out_secrets_of_live_tokens_only() {
    let env = Env::start().await;
    let c = &env.client;
    let issued = c
        .issue_client_token(
            WS,
            IssueClientToken {
                name: Some("svc".into()),
                provided_resource_id: Some("p-1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .token
        .unwrap();
    let client = issued.token_id();
    let minted = issued
        .token_str
        .clone()
        .expect("the issue reply shows the string");
    let user = Uuid::new_v4();
    let access = c
        .register_access_token(
            WS,
            RegisterAccessToken {
                id: None,
                user_id: user,
                provider: "google".into(),
                account_name: "u@example.com".into(),
                access_token: "ya29.first".into(),
                refresh_token: Some("1//refresh".into()),
            },
        )
        .await
        .unwrap()
        .token
        .unwrap()
        .token_id();

    // A client token: by id, name or provided id, the string its issue showed.
    for by in [
        GetBy::Id(client),
        GetBy::Name("SVC".into()),
        GetBy::ProvidedId("p-1".into()),
    ] {
        let view = c.reveal(WS, by).await.unwrap();
        assert_eq!(view.token_id(), client);
        assert_eq!(view.token_str.as_deref(), Some(minted.as_str()));
        assert_eq!(view.expired, Some(false));
    }
    assert!(c.verify(&minted).await.unwrap().is_active());
    // `get` never shows it.
    assert!(c
        .get(WS, GetBy::Id(client), None)
        .await
        .unwrap()
        .token_str
        .is_none());

    // An access token: the current secrets, in plaintext, with the view they belong to.
    let view = c.reveal(WS, GetBy::Id(access)).await.unwrap();
    assert_eq!(
        (view.access_token.as_deref(), view.refresh_token.as_deref()),
        (Some("ya29.first"), Some("1//refresh"))
    );
    c.refresh_access_token(
        WS,
        RefreshAccessToken {
            token_id: access,
            access_token: "ya29.second".into(),
            refresh_token: None,
        },
    )
    .await
    .unwrap();
    let view = c.reveal(WS, GetBy::Id(access)).await.unwrap();
    assert_eq!(
        (
            view.access_token.as_deref(),
            view.refresh_token.as_deref(),
            view.version
        ),
        (Some("ya29.second"), Some("1//refresh"), 2)
    );
    let plain = c.get(WS, GetBy::Id(access), None).await.unwrap();
    assert_eq!((plain.access_token, plain.refresh_token), (None, None));

    // Rejections: another workspace, unknown, no actor, unknown field, two lookups.
    let code = |r: Result<ledger_client::TokenView, ledger_client::ClientError>| {
        let e = r.unwrap_err();
        let rejection = e.rejection().expect("a rejection").clone();
        (rejection.code, rejection.field)
    };
    assert_eq!(
        code(c.reveal("other", GetBy::Id(access)).await),
        (ErrorCode::NotFound, Some("tokenId".into()))
    );
    assert_eq!(
        code(c.reveal(WS, GetBy::Name("nope".into())).await),
        (ErrorCode::NotFound, Some("name".into()))
    );
    let raw = |body: serde_json::Value| async move {
        let reply = c
            .nats()
            .request(format!("tokens.query.{WS}.reveal"), body.to_string().into())
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
    };
    let no_actor = raw(serde_json::json!({ "tokenId": access.to_string() })).await;
    assert_eq!(no_actor["error"]["code"], "invalid_input", "{no_actor}");
    assert_eq!(no_actor["error"]["field"], "actor", "{no_actor}");
    let actor = serde_json::json!({ "agentId": "svc", "agentType": "service" });
    let extra = raw(serde_json::json!({ "tokenId": access.to_string(), "actor": actor, "asOf": {"version": 1} })).await;
    assert_eq!(extra["error"]["field"], "asOf", "{extra}");
    let two =
        raw(serde_json::json!({ "tokenId": access.to_string(), "name": "svc", "actor": actor }))
            .await;
    assert_eq!(two["error"]["code"], "invalid_input", "{two}");
    for bad in [&no_actor, &extra, &two] {
        assert!(!bad.to_string().contains("ya29"), "{bad}");
    }

    // Trashed, revoked, purged: nothing.
    c.trash_token(
        WS,
        TrashToken {
            token_id: access,
            reason: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(c.reveal(WS, GetBy::Id(access)).await).0,
        ErrorCode::Trashed
    );
    c.revoke_token(
        WS,
        RevokeToken {
            token_id: client,
            reason: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(c.reveal(WS, GetBy::Name("svc".into())).await).0,
        ErrorCode::Revoked
    );
    c.purge_token(
        WS,
        PurgeToken {
            token_id: access,
            force: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(c.reveal(WS, GetBy::Id(access)).await).0,
        ErrorCode::NotFound
    );
}
