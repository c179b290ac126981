//! Model test: random command sequences, valid and invalid, through parse,
//! decide, stamp and evolve, with the ledger's invariants checked after
//! every step (sled-style; a minimized failure becomes a named test in
//! `rules.rs` with a `// postmortem:` comment).

mod support;

use ledger_core::command::{CommandName, READ_ONLY_FIELDS};
use ledger_core::event::GENESIS_HASH;
use ledger_core::state::{fold_token, TokenBody};
use ledger_core::validate::fold;
use ledger_core::{Envelope, LedgerState, StateError, TokenState, TokenView};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use support::*;
use uuid::Uuid;

/// Names that collide in groups once folded.
const NAMES: [&[&str]; 3] = [
    &["MyToken", "mytoken", "MYTOKEN"],
    &["Straße", "STRASSE", "strasse"],
    &["alpha", "Alpha", "ALPHA"],
];
const PROVIDED_IDS: [&str; 3] = ["user-1", "user-2", "User-1"];
const PROVIDERS: [&str; 2] = ["google", "Google"];
const ACCOUNTS: [&[&str]; 2] = [&["me@example.com", "ME@example.com"], &["you@example.com"]];
const GROUPS: [&str; 4] = ["g-a", "g-b", "g-c", "g-d"];
const WORKSPACES: [&str; 2] = [WS, OTHER_WS];

/// Which token a command names.
#[derive(Clone, Debug)]
enum Target {
    /// One created so far (index modulo their number).
    Known(usize),
    /// A random id, almost surely unknown.
    Random(u128),
}

/// How a command is made invalid, if it is.
#[derive(Clone, Debug)]
enum Spoil {
    None,
    ReadOnly(usize),
    Unknown,
    WrongType,
    BadUuid,
    BadWorkspace,
}

#[derive(Clone, Debug)]
struct Op {
    command: usize,
    target: Target,
    workspace: usize,
    name: Option<(usize, usize)>,
    clear_name: bool,
    provided_id: Option<usize>,
    if_exists_fail: bool,
    user: u128,
    provider: usize,
    account: (usize, usize),
    explicit_id: bool,
    refresh_token: bool,
    groups: Option<Vec<usize>>,
    expires: Option<i64>,
    expected_version: Option<u64>,
    force: bool,
    reason: bool,
    spoil: Spoil,
    advance_ms: i64,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => (0usize..64).prop_map(Target::Known),
        1 => any::<u128>().prop_map(Target::Random),
    ]
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        20 => Just(Spoil::None),
        1 => (0..READ_ONLY_FIELDS.len()).prop_map(Spoil::ReadOnly),
        1 => Just(Spoil::Unknown),
        1 => Just(Spoil::WrongType),
        1 => Just(Spoil::BadUuid),
        1 => Just(Spoil::BadWorkspace),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let a = (
        0..CommandName::ALL.len(),
        target(),
        prop_oneof![5 => Just(0usize), 1 => Just(1usize)],
        proptest::option::weighted(0.7, (0..NAMES.len(), 0usize..3)),
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.4, 0..PROVIDED_IDS.len()),
        proptest::bool::weighted(0.2),
        0u128..2,
        0..PROVIDERS.len(),
        (0..ACCOUNTS.len(), 0usize..2),
    );
    let b = (
        proptest::bool::weighted(0.2),
        any::<bool>(),
        proptest::option::weighted(0.5, proptest::collection::vec(0..GROUPS.len(), 0..4)),
        proptest::option::weighted(0.3, -5_000i64..86_400_000),
        proptest::option::weighted(0.15, 0u64..5),
        proptest::bool::weighted(0.3),
        any::<bool>(),
        spoil(),
        prop_oneof![Just(0i64), 1i64..100_000],
    );
    (a, b).prop_map(
        |(
            (
                command,
                target,
                workspace,
                name,
                clear_name,
                provided_id,
                if_exists_fail,
                user,
                provider,
                account,
            ),
            (
                explicit_id,
                refresh_token,
                groups,
                expires,
                expected_version,
                force,
                reason,
                spoil,
                advance_ms,
            ),
        )| Op {
            command,
            target,
            workspace,
            name,
            clear_name,
            provided_id,
            if_exists_fail,
            user,
            provider,
            account,
            explicit_id,
            refresh_token,
            groups,
            expires,
            expected_version,
            force,
            reason,
            spoil,
            advance_ms,
        },
    )
}

fn group_list(ids: &[usize]) -> Value {
    Value::Array(
        ids.iter()
            .map(|i| json!({ "permissionGroupId": GROUPS[*i] }))
            .collect(),
    )
}

/// The JSON body an op describes, against the scenario so far.
fn body(s: &Scenario, op: &Op) -> (CommandName, Value) {
    let name = CommandName::ALL[op.command];
    let mut b = json!({ "workspaceId": WORKSPACES[op.workspace] });
    let token = match &op.target {
        Target::Known(i) if !s.created.is_empty() => s.created[i % s.created.len()],
        Target::Known(i) => Uuid::from_u128(*i as u128),
        Target::Random(r) => Uuid::from_u128(*r),
    };
    let token_name = op.name.map(|(n, v)| NAMES[n][v % NAMES[n].len()]);
    let expires = op.expires.map(|d| s.now_ms + TICK_MS + d);
    let groups = op.groups.as_deref().map(group_list);
    match name {
        CommandName::IssueClientToken => {
            if let Some(n) = token_name {
                b["name"] = json!(n);
            }
            if let Some(p) = op.provided_id {
                b["providedResourceId"] = json!(PROVIDED_IDS[p]);
            }
            if op.if_exists_fail {
                b["ifExists"] = json!("fail");
            }
            if let Some(g) = groups {
                b["permissionGroups"] = g;
            }
            if let Some(e) = expires {
                b["expires"] = json!(e);
            }
        }
        CommandName::RegisterAccessToken => {
            if op.explicit_id {
                b["id"] = json!(token.to_string());
            }
            b["user"] = json!({ "id": user(op.user).to_string() });
            b["provider"] = json!(PROVIDERS[op.provider]);
            let accounts = ACCOUNTS[op.account.0];
            b["accountName"] = json!(accounts[op.account.1 % accounts.len()]);
            b["accessToken"] = json!("at");
            if op.refresh_token {
                b["refreshToken"] = json!("rt");
            }
        }
        other => {
            b["tokenId"] = json!(token.to_string());
            match other {
                CommandName::UpdateClientToken => {
                    if op.clear_name {
                        b["name"] = Value::Null;
                    } else if let Some(n) = token_name {
                        b["name"] = json!(n);
                    }
                    if let Some(e) = expires {
                        b["expires"] = json!(e);
                    }
                    if let Some(g) = groups {
                        b["permissionGroups"] = g;
                    }
                }
                CommandName::AssignPermissionGroups | CommandName::UnassignPermissionGroups => {
                    b["permissionGroups"] =
                        groups.unwrap_or_else(|| group_list(&[op.account.1 % GROUPS.len()]));
                }
                CommandName::RefreshAccessToken => {
                    b["accessToken"] = json!(format!("at-{}", s.log.len()));
                    if op.refresh_token {
                        b["refreshToken"] = json!("rt-new");
                    }
                }
                CommandName::UpdateAccessToken => {
                    let accounts = ACCOUNTS[op.account.0];
                    b["accountName"] = json!(accounts[op.account.1 % accounts.len()]);
                    if op.refresh_token {
                        b["provider"] = json!(PROVIDERS[op.provider]);
                    }
                }
                CommandName::TrashToken | CommandName::RevokeToken if op.reason => {
                    b["reason"] = json!("because");
                }
                CommandName::PurgeToken if op.force => {
                    b["force"] = json!(true);
                }
                _ => {}
            }
        }
    }
    if let Some(v) = op.expected_version {
        b["expectedVersion"] = json!(v);
    }
    match op.spoil {
        Spoil::None => {}
        Spoil::ReadOnly(i) => b[READ_ONLY_FIELDS[i]] = json!("x"),
        Spoil::Unknown => b["colour"] = json!("red"),
        Spoil::WrongType => b["expectedVersion"] = json!("one"),
        Spoil::BadUuid => b["commandId"] = json!(token.to_string().to_uppercase()),
        Spoil::BadWorkspace => b["workspaceId"] = json!("a.b"),
    }
    (name, b)
}

/// Every invariant of the ledger, checked against the log and the state.
fn check_invariants(s: &Scenario) {
    // Positions are gap-free from 1 and the hash chain links.
    for (i, e) in s.log.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions are gap-free");
        let prev = if i == 0 {
            GENESIS_HASH
        } else {
            s.log[i - 1].hash.as_str()
        };
        assert_eq!(e.prev_hash, prev, "prevHash links at {}", e.position);
        assert_eq!(
            e.computed_hash(),
            e.hash,
            "hash recomputes at {}",
            e.position
        );
        assert_eq!(
            Envelope::from_json(&e.to_json_bytes()).as_ref().ok(),
            Some(e)
        );
    }
    assert_eq!(s.state.position, s.log.len() as u64);

    // Per token: version = number of events, gap-free from 1; the token's own
    // stream folds to the same state.
    let mut streams: HashMap<Uuid, Vec<&Envelope>> = HashMap::new();
    for e in &s.log {
        streams.entry(e.token_id).or_default().push(e);
    }
    assert_eq!(streams.len(), s.state.token_count());
    for token in s.state.tokens() {
        let stream = &streams[&token.id];
        assert_eq!(token.version, stream.len() as u64);
        for (i, e) in stream.iter().enumerate() {
            assert_eq!(e.version, i as u64 + 1, "versions are gap-free");
            assert_eq!(e.workspace_id, token.workspace_id);
            assert_eq!(e.token_kind, token.kind());
        }
        assert_eq!(fold_token(stream.iter().copied()).as_ref(), Some(token));
        let view = TokenView::of(token);
        assert_eq!(view.is_none(), token.purged);
        if let Some(view) = view {
            assert_eq!(view.token_id(), token.id);
            assert_eq!(view.version, token.version);
        }
    }

    // Uniqueness, recomputed from scratch.
    let mut names = HashSet::new();
    let mut provided = HashSet::new();
    let mut accounts = HashSet::new();
    for t in s.state.tokens().filter(|t| !t.purged) {
        match &t.body {
            TokenBody::Client {
                name,
                provided_resource_id,
                ..
            } => {
                if let Some(n) = name {
                    assert!(
                        names.insert((t.workspace_id.clone(), fold(n))),
                        "two client tokens named {n:?} in {}",
                        t.workspace_id
                    );
                }
                if let Some(p) = provided_resource_id {
                    assert!(
                        provided.insert((t.workspace_id.clone(), p.clone())),
                        "two client tokens with providedResourceId {p:?}"
                    );
                }
            }
            TokenBody::Access {
                user_id,
                provider,
                account_name,
                ..
            } if t.is_live() => {
                assert!(
                    accounts.insert((
                        t.workspace_id.clone(),
                        *user_id,
                        fold(provider),
                        fold(account_name)
                    )),
                    "two live access tokens for {account_name:?}"
                );
            }
            TokenBody::Access { .. } => {}
        }
    }
    // The state's index holds exactly the keys its tokens claim.
    let mut claimed = 0;
    for t in s.state.tokens() {
        for key in t.reservations() {
            assert_eq!(s.state.holder(&key), Some(t.id), "{key:?}");
            claimed += 1;
        }
    }
    assert_eq!(s.state.reservations().count(), claimed);
    assert_eq!(claimed, names.len() + provided.len() + accounts.len());

    // Replay from scratch equals the incremental state.
    assert_eq!(
        s.replayed(),
        s.state,
        "replay differs from the incremental state"
    );

    // So does the state rebuilt from its tokens alone, through JSON as the
    // store's snapshot keeps them: the uniqueness keys follow from them.
    let tokens: Vec<TokenState> = s
        .state
        .tokens()
        .map(|t| serde_json::from_slice(&serde_json::to_vec(t).unwrap()).unwrap())
        .collect();
    assert_eq!(
        LedgerState::from_tokens(s.state.position, tokens),
        Ok(s.state.clone()),
        "the state from its tokens differs"
    );
}

fn run(ops: &[Op]) -> Scenario {
    let mut s = Scenario::new();
    for op in ops {
        s.advance(op.advance_ms);
        let (name, json) = body(&s, op);
        let log_before = s.log.len();
        let out = s.when(name.as_str(), json.clone());
        match &out.result {
            Err(rejection) => {
                assert_eq!(
                    out.before, out.after,
                    "{name} {json}: rejected ({rejection}) yet changed the state"
                );
                assert_eq!(s.log.len(), log_before);
            }
            Ok(decision) => {
                assert!(out.events.len() <= 1, "one event per command");
                if out.events.is_empty() {
                    assert_eq!(out.before, out.after);
                }
                for e in &out.events {
                    assert_eq!(e.token_id, decision.token_id);
                    let prior = out.before.token(&e.token_id).map_or(0, |t| t.version);
                    assert_eq!(e.version, prior + 1);
                }
                assert!(s.state.token(&decision.token_id).is_some());
            }
        }
        check_invariants(&s);
    }
    s
}

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer run.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn random_command_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

/// Two tokens holding one name cannot come from a fold: the snapshot path refuses them.
#[test]
fn a_state_with_a_name_held_twice_is_refused() {
    let mut s = Scenario::new();
    let first = s.when("issue_client_token", json!({"name": "Bot"}));
    let first = first.result.expect("issued").token_id;
    let mut twin = s.state.token(&first).unwrap().clone();
    twin.id = Uuid::new_v4();
    let tokens = vec![s.state.token(&first).unwrap().clone(), twin.clone()];
    assert!(matches!(
        LedgerState::from_tokens(2, tokens),
        Err(StateError::KeyHeldTwice(_))
    ));
    let same = vec![twin.clone(), twin];
    assert!(matches!(
        LedgerState::from_tokens(2, same),
        Err(StateError::KeyHeldTwice(_) | StateError::TokenTwice(_))
    ));
}

/// The generator reaches the interesting outcomes; otherwise the model test
/// would pass vacuously.
#[test]
fn the_generator_reaches_every_event_type_and_many_rejections() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut types = HashSet::new();
    let mut codes = HashSet::new();
    for _ in 0..64 {
        let ops = proptest::collection::vec(op(), 40..60)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut s = Scenario::new();
        for op in &ops {
            s.advance(op.advance_ms);
            let (name, json) = body(&s, op);
            let out = s.when(name.as_str(), json);
            if let Err(r) = &out.result {
                codes.insert(r.code);
            }
        }
        types.extend(s.log.iter().map(|e| e.event_type()));
    }
    assert_eq!(
        types.len(),
        ledger_core::event::EventType::ALL.len(),
        "{types:?}"
    );
    use ledger_core::ErrorCode::*;
    for code in [
        InvalidInput,
        NotFound,
        Conflict,
        NameTaken,
        ProvidedIdTaken,
        AccountTaken,
        Trashed,
        Revoked,
        NotTrashed,
    ] {
        assert!(codes.contains(&code), "never saw {code}: {codes:?}");
    }
}
