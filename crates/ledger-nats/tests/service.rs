//! Commands and queries over NATS request/reply against a real nats-server.

mod common;

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

struct Env {
    _nats: ledger_testkit::NatsServer,
    _dir: tempfile::TempDir,
    store: ledger_store::Store,
    server: Server,
    client: async_nats::Client,
}

async fn env() -> Env {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &ledger_crypto::MasterKey::generate());
    let server = Server::start(store.clone(), nats.url()).await;
    let client = client(&nats.url()).await;
    Env {
        _nats: nats,
        _dir: dir,
        store,
        server,
        client,
    }
}

fn positions(result: &Value) -> Vec<u64> {
    result["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_over_request_reply() {
    let e = env().await;
    let c = &e.client;

    let issued = command(
        c,
        "issue_client_token",
        json!({
            "name": "alpha",
            "providedResourceId": "user-1",
            "permissionGroups": [{"permissionGroupId": "g1"}],
            "expires": 4_102_444_800_000i64,
        }),
    )
    .await;
    assert_eq!(positions(&issued), [1]);
    let token = &issued["token"];
    assert_eq!(token["kind"], "client");
    assert_eq!(token["version"], 1);
    assert_eq!(token["name"], "alpha");
    assert_eq!(token["expired"], false);
    let first_str = token["tokenStr"].as_str().expect("issue shows tokenStr");
    assert_eq!(first_str.split('.').count(), 3, "a JWT");
    let a = token["resourceId"].as_str().unwrap().to_owned();

    let updated = command(
        c,
        "update_client_token",
        json!({"tokenId": a, "name": "alpha-2"}),
    )
    .await;
    assert_eq!(positions(&updated), [2]);
    assert_eq!(updated["token"]["name"], "alpha-2");
    assert_eq!(updated["token"]["version"], 2);
    assert!(
        updated["token"].get("tokenStr").is_none(),
        "only issue and rotate show the string"
    );

    let assigned = command(
        c,
        "assign_permission_groups",
        json!({"tokenId": a, "permissionGroups": [{"permissionGroupId": "g2"}]}),
    )
    .await;
    assert_eq!(positions(&assigned), [3]);
    assert_eq!(
        assigned["token"]["permissionGroups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let unassigned = command(
        c,
        "unassign_permission_groups",
        json!({"tokenId": a, "permissionGroups": [{"permissionGroupId": "g1"}]}),
    )
    .await;
    assert_eq!(positions(&unassigned), [4]);
    assert_eq!(
        unassigned["token"]["permissionGroups"][0]["permissionGroupId"],
        "g2"
    );

    let rotated = command(c, "rotate_client_token", json!({"tokenId": a})).await;
    assert_eq!(positions(&rotated), [5]);
    let second_str = rotated["token"]["tokenStr"]
        .as_str()
        .expect("rotate shows tokenStr");
    assert_ne!(first_str, second_str);

    let registered = command(
        c,
        "register_access_token",
        json!({
            "user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"},
            "provider": "google",
            "accountName": "b@example.com",
            "accessToken": "ya29.secret",
            "refreshToken": "1//refresh",
        }),
    )
    .await;
    assert_eq!(positions(&registered), [6]);
    let b = registered["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(registered["token"]["kind"], "access");
    assert!(registered["token"]["accessTokenFingerprint"].is_string());
    assert!(!registered.to_string().contains("ya29.secret"));

    let refreshed = command(
        c,
        "refresh_access_token",
        json!({"tokenId": b, "accessToken": "ya29.new"}),
    )
    .await;
    assert_eq!(positions(&refreshed), [7]);
    assert_ne!(
        refreshed["token"]["accessTokenFingerprint"],
        registered["token"]["accessTokenFingerprint"]
    );

    let renamed = command(
        c,
        "update_access_token",
        json!({"tokenId": b, "accountName": "b2@example.com"}),
    )
    .await;
    assert_eq!(positions(&renamed), [8]);
    assert_eq!(renamed["token"]["accountName"], "b2@example.com");

    let trashed = command(c, "trash_token", json!({"tokenId": a, "reason": "test"})).await;
    assert_eq!(positions(&trashed), [9]);
    assert!(trashed["token"]["trashItem"].is_object());

    let restored = command(c, "restore_token", json!({"tokenId": a})).await;
    assert_eq!(positions(&restored), [10]);
    assert!(restored["token"].get("trashItem").is_none());

    let revoked = command(c, "revoke_token", json!({"tokenId": a})).await;
    assert_eq!(positions(&revoked), [11]);
    assert_eq!(revoked["token"]["revoked"], true);
    assert_eq!(revoked["token"]["version"], 8);

    let trashed_b = command(c, "trash_token", json!({"tokenId": b})).await;
    assert_eq!(positions(&trashed_b), [12]);
    let purged = command(c, "purge_token", json!({"tokenId": b})).await;
    assert_eq!(positions(&purged), [13]);
    assert!(purged["token"].is_null());

    assert_eq!(e.store.head_position(), 13);
    e.server.wait_published(&e.store).await;
    let js = async_nats::jetstream::new(e.client.clone());
    check_stream_equals_log(&js, &e.store).await.unwrap();
    let counters = e.server.metrics.requests();
    assert_eq!(counters.commands_accepted, 13);
    assert_eq!(counters.requests_rejected, 0);
    e.server.stop().await.unwrap();
}

/// nats-server checks who may publish a request, not where its reply goes,
/// and the ledger may publish into its stream and its lease. A request whose
/// reply subject is one of those (or any `$` subject) is neither executed
/// nor answered; the stream keeps equal to the log, the lease stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_subject_in_the_ledgers_own_namespace_is_refused() {
    let e = env().await;
    let c = &e.client;
    let js = async_nats::jetstream::new(c.clone());
    command(c, "issue_client_token", json!({"name": "before"})).await;
    let issue = format!("tokens.cmd.{WS}.issue_client_token");
    let list = format!("tokens.query.{WS}.list");
    for reply in [
        "tokens.evt.acme.6a1f5f3e-0000-4000-8000-000000000000.token_revoked",
        "$KV.TOKENS_WRITER.writer",
        "tokens.checkpoint",
        "$JS.API.STREAM.DELETE.TOKENS",
    ] {
        let body = serde_json::to_vec(&body(json!({"name": format!("via {reply}")}))).unwrap();
        c.publish_with_reply(issue.clone(), reply.to_owned(), body.into())
            .await
            .unwrap();
        c.publish_with_reply(list.clone(), reply.to_owned(), "{}".into())
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    // Each endpoint takes its requests in order: once these are answered,
    // the ones above were handled.
    command(c, "issue_client_token", json!({"name": "after"})).await;
    query(c, WS, "list", json!({})).await;
    assert_eq!(e.store.head_position(), 2, "a refused request was executed");
    assert!(e.server.metrics.holds_writer_lease());
    e.server.wait_published(&e.store).await;
    check_stream_equals_log(&js, &e.store).await.unwrap();
    assert!(e.server.metrics.requests().requests_rejected >= 8);
    e.server.stop().await.unwrap();
}

/// A key rotation's actor is checked as a command's is: one that would put
/// a control character into the key history is refused, and no key rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_with_a_malformed_actor_is_refused_and_rotates_nothing() {
    let e = env().await;
    let before = e.store.key_history().unwrap().len();
    for agent_id in ["", "  ", "a\tb", "line\nforged"] {
        let body = json!({"actor": {"agentId": agent_id, "agentType": "user"}});
        let err = rejected(
            &e.client,
            "tokens.admin.keys.rotate",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(err["code"], "invalid_input", "{agent_id:?}: {err}");
        assert_eq!(err["field"], "actor.agentId", "{agent_id:?}: {err}");
    }
    assert_eq!(e.store.key_history().unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_replied_with_a_body_and_the_service_error_headers() {
    let e = env().await;
    let c = &e.client;
    let subject = format!("tokens.cmd.{WS}.issue_client_token");

    let err = rejected(c, &subject, b"{\"commandId\": ".to_vec()).await;
    assert_eq!(err["code"], "invalid_input");
    assert_eq!(err["field"], "body");
    assert!(err["message"].as_str().unwrap().contains("malformed JSON"));

    let other_ws = serde_json::to_vec(&body(json!({"workspaceId": "other"}))).unwrap();
    let err = rejected(c, &subject, other_ws).await;
    assert_eq!(err["code"], "invalid_input");
    assert_eq!(err["field"], "workspaceId");

    let err = rejected(
        c,
        &format!("tokens.cmd.{WS}.make_coffee"),
        serde_json::to_vec(&body(json!({}))).unwrap(),
    )
    .await;
    assert_eq!(err["code"], "invalid_input");
    assert!(err["message"].as_str().unwrap().contains("make_coffee"));

    let err = rejected(c, &format!("tokens.query.{WS}.count"), b"{}".to_vec()).await;
    assert_eq!(err["code"], "invalid_input");

    let huge = serde_json::to_vec(&body(json!({"name": "x".repeat(70 * 1024)}))).unwrap();
    let err = rejected(c, &subject, huge).await;
    assert_eq!(err["code"], "invalid_input");
    assert_eq!(err["field"], "body");

    let err = rejected(
        c,
        &subject,
        serde_json::to_vec(&body(json!({"version": 3}))).unwrap(),
    )
    .await;
    assert_eq!(err["field"], "version", "read-only field named");

    let err = rejected(c, "tokens.cmd.bad$ws.issue_client_token", b"{}".to_vec()).await;
    assert_eq!(err["field"], "workspaceId");

    assert_eq!(e.store.head_position(), 0, "nothing appended by bad input");

    let first = command(c, "issue_client_token", json!({"name": "MyToken"})).await;
    let id = first["token"]["resourceId"].as_str().unwrap().to_owned();
    let err = rejected(
        c,
        &subject,
        serde_json::to_vec(&body(json!({"name": "mytoken"}))).unwrap(),
    )
    .await;
    assert_eq!(err["code"], "name_taken");

    let err = rejected(
        c,
        &format!("tokens.cmd.{WS}.update_client_token"),
        serde_json::to_vec(&body(
            json!({"tokenId": id, "name": "renamed", "expectedVersion": 7}),
        ))
        .unwrap(),
    )
    .await;
    assert_eq!(err["code"], "conflict");
    assert_eq!(err["currentVersion"], 1);

    let err = rejected(
        c,
        &format!("tokens.cmd.{WS}.restore_token"),
        serde_json::to_vec(&body(json!({"tokenId": Uuid::new_v4().to_string()}))).unwrap(),
    )
    .await;
    assert_eq!(err["code"], "not_found");

    assert_eq!(e.store.head_position(), 1, "rejections append nothing");
    assert_eq!(e.server.metrics.requests().requests_rejected, 10);
    e.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_id_returns_the_first_result_and_appends_nothing() {
    let e = env().await;
    let cmd = body(json!({"name": "once"}));
    let subject = format!("tokens.cmd.{WS}.issue_client_token");
    let payload = serde_json::to_vec(&cmd).unwrap();
    let (first, _) = request(&e.client, &subject, payload.clone()).await;
    let (again, _) = request(&e.client, &subject, payload).await;
    assert_eq!(first["ok"], true);
    assert_eq!(again["ok"], true);
    assert_eq!(first["result"]["positions"], json!([1]));
    assert_eq!(again["result"]["positions"], first["result"]["positions"]);
    assert_eq!(
        again["result"]["token"]["resourceId"],
        first["result"]["token"]["resourceId"]
    );
    assert_eq!(
        again["result"]["token"]["tokenStr"],
        first["result"]["token"]["tokenStr"]
    );
    assert_eq!(e.store.head_position(), 1);
    e.server.wait_published(&e.store).await;
    let js = async_nats::jetstream::new(e.client.clone());
    check_stream_equals_log(&js, &e.store).await.unwrap();
    e.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_get_distinct_gap_free_positions() {
    let e = env().await;
    let n = 200;
    let replies = futures_util::future::join_all((0..n).map(|i| {
        let c = e.client.clone();
        async move { command(&c, "issue_client_token", json!({"name": format!("t{i}")})).await }
    }))
    .await;
    let mut all: Vec<u64> = replies.iter().flat_map(positions).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=n).collect::<Vec<u64>>());
    e.server.wait_published(&e.store).await;
    let js = async_nats::jetstream::new(e.client.clone());
    check_stream_equals_log(&js, &e.store).await.unwrap();
    e.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_micro_service_answers_ping_info_and_stats() {
    let e = env().await;
    let (ping, _) = request(&e.client, "$SRV.PING.tokenledger", vec![]).await;
    assert_eq!(ping["name"], "tokenledger");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");

    let (info, _) = request(&e.client, "$SRV.INFO.tokenledger", vec![]).await;
    let endpoints = info["endpoints"].as_array().unwrap();
    let subject_of = |name: &str| {
        endpoints
            .iter()
            .find(|ep| ep["name"] == name)
            .unwrap_or_else(|| panic!("endpoint {name} in {info}"))
            .clone()
    };
    for name in ledger_core::CommandName::ALL {
        let ep = subject_of(name.as_str());
        assert_eq!(ep["subject"], format!("tokens.cmd.*.{name}"));
        assert_eq!(ep["queue_group"], "tokenledger");
    }
    for q in ["get", "list", "history", "reveal"] {
        assert_eq!(subject_of(q)["subject"], format!("tokens.query.*.{q}"));
    }
    assert_eq!(subject_of("unknown_command")["subject"], "tokens.cmd.*.*");
    for (name, subject) in [
        ("verify", "tokens.verify"),
        ("jwks", "tokens.jwks"),
        ("snapshot", "tokens.snapshot"),
        ("keys_rotate", "tokens.admin.keys.rotate"),
        ("keys_list", "tokens.admin.keys.list"),
    ] {
        assert_eq!(subject_of(name)["subject"], subject);
        assert_eq!(subject_of(name)["queue_group"], "tokenledger");
    }
    assert_eq!(endpoints.len(), 23);

    command(&e.client, "issue_client_token", json!({"name": "once"})).await;
    let subject = format!("tokens.cmd.{WS}.issue_client_token");
    let again = serde_json::to_vec(&body(json!({"name": "ONCE"}))).unwrap();
    rejected(&e.client, &subject, again).await;
    let (stats, _) = request(&e.client, "$SRV.STATS.tokenledger", vec![]).await;
    let endpoint = |name: &str| {
        stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ep| ep["name"] == name)
            .unwrap()
            .clone()
    };
    let issue = endpoint("issue_client_token");
    assert_eq!(issue["num_requests"], 2, "{stats}");
    // Error replies carry a body, so the micro API's own count stays 0;
    // each endpoint's data counts them.
    assert_eq!(issue["data"]["rejected"], 1, "{stats}");
    assert_eq!(endpoint("get")["data"]["rejected"], 0, "{stats}");
    e.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_a_tokens_envelopes_in_version_order() {
    let e = env().await;
    let c = &e.client;
    let issued = command(c, "issue_client_token", json!({"name": "h"})).await;
    let id = issued["token"]["resourceId"].as_str().unwrap().to_owned();
    command(c, "issue_client_token", json!({"name": "other"})).await;
    command(c, "rotate_client_token", json!({"tokenId": id})).await;

    let subject = format!("tokens.query.{WS}.history");
    let (reply, _) = request(
        c,
        &subject,
        serde_json::to_vec(&json!({"tokenId": id})).unwrap(),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let events = reply["result"]["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["client_token_issued", "client_token_rotated"]);
    assert_eq!(events[0]["version"], 1);
    assert_eq!(events[1]["version"], 2);
    assert_eq!(events[1]["position"], 3);
    let published = e
        .store
        .event(3)
        .unwrap()
        .unwrap()
        .published_bytes()
        .unwrap();
    assert_eq!(
        events[1],
        serde_json::from_slice::<Value>(&published).unwrap()
    );

    let err = rejected(
        c,
        "tokens.query.elsewhere.history",
        serde_json::to_vec(&json!({"tokenId": id})).unwrap(),
    )
    .await;
    assert_eq!(err["code"], "not_found", "another workspace sees nothing");
    let err = rejected(
        c,
        &subject,
        serde_json::to_vec(&json!({"tokenId": "nope"})).unwrap(),
    )
    .await;
    assert_eq!(err["field"], "tokenId");
    let err = rejected(
        c,
        &subject,
        serde_json::to_vec(&json!({"tokenId": id, "extra": 1})).unwrap(),
    )
    .await;
    assert_eq!(err["field"], "extra");
    e.server.stop().await.unwrap();
}

async fn query(c: &async_nats::Client, ws: &str, name: &str, q: Value) -> Value {
    let (reply, _) = request(
        c,
        &format!("tokens.query.{ws}.{name}"),
        serde_json::to_vec(&q).unwrap(),
    )
    .await;
    assert_eq!(reply["ok"], true, "{name} {q}: {reply}");
    reply["result"].clone()
}

async fn query_error(c: &async_nats::Client, name: &str, q: Value) -> Value {
    rejected(
        c,
        &format!("tokens.query.{WS}.{name}"),
        serde_json::to_vec(&q).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_list_read_the_views_with_their_own_writes() {
    let e = env().await;
    let c = &e.client;
    let a = command(
        c,
        "issue_client_token",
        json!({"name": "Alpha", "providedResourceId": "p-1"}),
    )
    .await["token"]["resourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = command(c, "issue_client_token", json!({"name": "beta"})).await["token"]["resourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = "71c84cd2-91ac-4e6b-a74e-393c87d5f97d";
    let access = command(
        c,
        "register_access_token",
        json!({"user": {"id": user}, "provider": "google", "accountName": "c@example.com", "accessToken": "s"}),
    )
    .await["token"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    command(c, "trash_token", json!({"tokenId": b})).await;
    command(
        c,
        "update_client_token",
        json!({"tokenId": a, "name": "Alpha-2"}),
    )
    .await;

    // Read-your-writes: the views are caught up before answering.
    let got = query(c, WS, "get", json!({"tokenId": a})).await;
    assert_eq!(got["token"]["name"], "Alpha-2");
    assert_eq!(got["token"]["version"], 2);
    assert_eq!(got["token"]["expired"], false);
    let by_name = query(c, WS, "get", json!({"name": "alpha-2"})).await;
    assert_eq!(by_name["token"]["resourceId"], a.as_str());
    let by_provided = query(c, WS, "get", json!({"providedResourceId": "p-1"})).await;
    assert_eq!(by_provided["token"]["resourceId"], a.as_str());

    let then = query(c, WS, "get", json!({"tokenId": a, "asOf": {"version": 1}})).await;
    assert_eq!(then["token"]["name"], "Alpha");
    let then = query(c, WS, "get", json!({"tokenId": a, "asOf": {"position": 4}})).await;
    assert_eq!(then["token"]["version"], 1);
    let err = query_error(
        c,
        "get",
        json!({"tokenId": a, "asOf": {"time": "2001-01-01T00:00:00Z"}}),
    )
    .await;
    assert_eq!(err["code"], "not_found", "not yet created then");
    // By the name it holds now, as it was then (PRODUCT.md: by tokenId, name
    // or providedResourceId, optional asOf).
    let then = query(
        c,
        WS,
        "get",
        json!({"name": "ALPHA-2", "asOf": {"version": 1}}),
    )
    .await;
    assert_eq!(then["token"]["name"], "Alpha");
    let then = query(
        c,
        WS,
        "get",
        json!({"providedResourceId": "p-1", "asOf": {"version": 1}}),
    )
    .await;
    assert_eq!(then["token"]["resourceId"], a.as_str());
    let err = query_error(c, "get", json!({"name": "Alpha", "asOf": {"version": 1}})).await;
    assert_eq!(
        (err["code"].as_str(), err["field"].as_str()),
        (Some("not_found"), Some("name"))
    );
    let err = query_error(
        c,
        "get",
        json!({"tokenId": a, "asOf": {"time": "yesterday"}}),
    )
    .await;
    assert_eq!(err["code"], "invalid_input");
    assert!(err["field"].as_str().unwrap().starts_with("asOf"), "{err}");
    let err = query_error(c, "get", json!({"tokenId": a, "name": "Alpha-2"})).await;
    assert_eq!(err["field"], "body");
    let err = query_error(c, "get", json!({"name": "nobody"})).await;
    assert_eq!(err["code"], "not_found");
    assert_eq!(err["field"], "name", "the lookup is named");
    let err = query_error(c, "get", json!({"tokenId": a, "asOf": {"version": 0}})).await;
    assert_eq!(
        (err["code"].as_str(), err["field"].as_str()),
        (Some("invalid_input"), Some("asOf.version"))
    );
    let err = query_error(c, "history", json!({"tokenId": Uuid::new_v4().to_string()})).await;
    assert_eq!(err["field"], "tokenId");
    let err = rejected(
        c,
        "tokens.query.elsewhere.get",
        serde_json::to_vec(&json!({"tokenId": a})).unwrap(),
    )
    .await;
    assert_eq!(err["code"], "not_found", "another workspace sees nothing");

    let page = query(c, WS, "list", json!({})).await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["resourceId"].as_str().or(t["id"].as_str()).unwrap())
        .collect();
    assert_eq!(
        ids,
        [a.as_str(), access.as_str()],
        "trashed excluded, creation order"
    );
    assert!(page["nextCursor"].is_null());

    let first = query(c, WS, "list", json!({"limit": 1})).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = query(c, WS, "list", json!({"limit": 1, "cursor": cursor})).await;
    assert_eq!(second["items"][0]["id"], access.as_str());

    let trashed = query(c, WS, "list", json!({"trashed": "only"})).await;
    assert_eq!(trashed["items"][0]["resourceId"], b.as_str());
    let by_user = query(c, WS, "list", json!({"userId": user, "provider": "GOOGLE"})).await;
    assert_eq!(by_user["items"][0]["id"], access.as_str());
    let clients = query(
        c,
        WS,
        "list",
        json!({"kind": "client", "trashed": "include"}),
    )
    .await;
    assert_eq!(clients["items"].as_array().unwrap().len(), 2);
    let empty = query(c, "elsewhere", "list", json!({})).await;
    assert_eq!(empty["items"], json!([]));

    let err = query_error(c, "list", json!({"cursor": "!!"})).await;
    assert_eq!(err["field"], "cursor");
    let err = query_error(c, "list", json!({"limit": 0})).await;
    assert_eq!(err["field"], "limit");
    let err = query_error(c, "list", json!({"colour": "red"})).await;
    assert_eq!(err["field"], "colour");
    let err = query_error(c, "list", json!({"trashed": "sometimes"})).await;
    assert_eq!(err["field"], "trashed");
    // A user id as everywhere else: lowercase canonical, or refused.
    for other_form in [
        user.to_uppercase(),
        user.replace('-', ""),
        format!("{{{user}}}"),
    ] {
        let err = query_error(c, "list", json!({"userId": other_form})).await;
        assert_eq!(err["field"], "userId", "{other_form}: {err}");
    }
    let err = query_error(c, "list", json!({"cursor": ""})).await;
    assert_eq!(err["field"], "cursor", "{err}");
    let err = rejected(c, &format!("tokens.query.{WS}.list"), b"[1".to_vec()).await;
    assert_eq!(err["field"], "body");
    e.server.stop().await.unwrap();
}
