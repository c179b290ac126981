//! The verifier on real stores and on crafted logs: an honest log passes;
//! a flipped byte, a dropped, swapped or truncated event and a rewritten
//! suffix are each named at the right position; events the domain rules
//! would not have produced are findings, never panics.

use ledger_audit::checkpoints::CheckpointStore;
use ledger_audit::merkle::{verify_consistency, verify_inclusion, ProofTree};
use ledger_audit::verify::{ExpectedRoot, NoObserver, VerifyOptions};
use ledger_audit::{Checkpointer, FindingKind, LogReader, Plan, Record, Report, TimeReversals};
use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::event::{
    ClientTokenIssued, ClientTokenUpdated, JwtRef, StampMeta, TokenRestored, TokenRevoked,
    TokenTrashed, GENESIS_HASH,
};
use ledger_core::{Agent, CommandName, Envelope, EventData, EventDraft, Timestamp, TokenKind};
use ledger_store::{keys, Store, StoreConfig};
use serde_json::{json, Value};
use std::path::Path;
use uuid::Uuid;

fn cmd(name: CommandName, mut body: Value) -> ParsedCommand {
    let obj = body.as_object_mut().unwrap();
    obj.entry("commandId")
        .or_insert_with(|| json!(Uuid::new_v4().to_string()));
    obj.entry("workspaceId").or_insert_with(|| json!("acme"));
    obj.entry("actor")
        .or_insert_with(|| json!({"agentId": "alice", "agentType": "user"}));
    parse_value(name, body).expect("valid command")
}

/// A store with 20 events of every kind; returns its head.
fn build(dir: &Path) -> u64 {
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    let run = |name, body| store.execute_blocking(cmd(name, body)).unwrap().token_id;
    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(run(
            CommandName::IssueClientToken,
            json!({"name": format!("token-{i}"), "permissionGroups": [{"permissionGroupId": "pg_a"}]}),
        ));
    }
    let access = run(
        CommandName::RegisterAccessToken,
        json!({"user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"}, "provider": "google",
               "accountName": "a@example.com", "accessToken": "s3cret", "refreshToken": "r3fresh"}),
    );
    let t = |i: usize| tokens[i].to_string();
    run(
        CommandName::UpdateClientToken,
        json!({"tokenId": t(0), "name": "renamed"}),
    );
    run(
        CommandName::AssignPermissionGroups,
        json!({"tokenId": t(1), "permissionGroups": [{"permissionGroupId": "pg_b"}]}),
    );
    run(
        CommandName::UnassignPermissionGroups,
        json!({"tokenId": t(1), "permissionGroups": [{"permissionGroupId": "pg_a"}]}),
    );
    run(CommandName::RotateClientToken, json!({"tokenId": t(2)}));
    run(
        CommandName::RefreshAccessToken,
        json!({"tokenId": access.to_string(), "accessToken": "n3w"}),
    );
    run(
        CommandName::UpdateAccessToken,
        json!({"tokenId": access.to_string(), "accountName": "b@example.com"}),
    );
    run(
        CommandName::TrashToken,
        json!({"tokenId": t(3), "reason": "unused"}),
    );
    run(CommandName::RestoreToken, json!({"tokenId": t(3)}));
    run(CommandName::RevokeToken, json!({"tokenId": t(2)}));
    run(CommandName::TrashToken, json!({"tokenId": t(2)}));
    run(CommandName::PurgeToken, json!({"tokenId": t(2)}));
    run(
        CommandName::IssueClientToken,
        json!({"name": format!("token-{}", 2)}),
    );
    run(
        CommandName::PurgeToken,
        json!({"tokenId": t(0), "force": true}),
    );
    run(
        CommandName::TrashToken,
        json!({"tokenId": access.to_string()}),
    );
    run(
        CommandName::RestoreToken,
        json!({"tokenId": access.to_string()}),
    );
    let head = store.head_position();
    store.shutdown().unwrap();
    head
}

fn options(threads: usize) -> VerifyOptions {
    VerifyOptions {
        schema: true,
        threads,
    }
}

fn stored_roots(dir: &Path) -> Vec<ExpectedRoot> {
    CheckpointStore::new(dir)
        .list()
        .unwrap()
        .into_iter()
        .map(|(p, c)| ExpectedRoot {
            size: c.checkpoint.size,
            root: c.checkpoint.root,
            label: p.display().to_string(),
        })
        .collect()
}

fn verify_dir(dir: &Path, threads: usize) -> Report {
    let roots = stored_roots(dir);
    let reader = LogReader::open(dir).unwrap();
    let plan = Plan {
        roots,
        ..Plan::whole_log()
    };
    ledger_audit::verify(
        reader.all_records(),
        plan,
        &options(threads),
        &mut NoObserver,
        &mut |_| {},
    )
    .unwrap()
}

/// Checkpoints at the given sizes, signed with the data dir's key.
fn checkpoint_at(dir: &Path, sizes: impl IntoIterator<Item = u64>) {
    let reader = LogReader::open(dir).unwrap();
    let mut cp = Checkpointer::open_on(dir, reader).unwrap();
    for size in sizes {
        cp.checkpoint_at(size, Timestamp::parse("2026-01-01T00:00:00Z").unwrap())
            .unwrap();
    }
}

/// Runs `f` on the raw `log` tree (the store is closed).
fn tamper(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let reader = LogReader::open(dir).unwrap();
    let tree = reader.db().open_tree("log").unwrap();
    f(&tree);
    tree.flush().unwrap();
}

fn record(tree: &sled::Tree, position: u64) -> Vec<u8> {
    tree.get(keys::event(position)).unwrap().unwrap().to_vec()
}

fn envelope(value: &[u8]) -> Envelope {
    let mut env = Envelope::from_json(&value[32..]).unwrap();
    env.hash = hex::encode(&value[..32]);
    env
}

fn store_envelope(tree: &sled::Tree, env: &Envelope) -> [u8; 32] {
    let bytes = env.canonical_bytes();
    let hash = ledger_core::event::hash_hex(&bytes);
    let mut value = hex::decode(&hash).unwrap();
    value.extend_from_slice(&bytes);
    tree.insert(keys::event(env.position), value).unwrap();
    hex::decode(hash).unwrap().try_into().unwrap()
}

fn finding(report: &Report) -> (u64, FindingKind) {
    let f = report.finding.as_ref().expect("a finding");
    (f.position, f.kind)
}

#[test]
fn an_honest_log_verifies_with_and_without_threads() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    checkpoint_at(dir.path(), [5, head]);
    for threads in [0, 1, 3] {
        let report = verify_dir(dir.path(), threads);
        assert_eq!(report.finding, None, "threads {threads}");
        assert_eq!(report.summary.events, head);
        assert_eq!(report.summary.head_position, head);
        assert_eq!(report.summary.tokens, 6);
        assert_eq!(report.summary.checkpoints.len(), 2);
        assert!(report
            .summary
            .checkpoints
            .iter()
            .all(|c| c.outcome == "matches"));
        let reader = LogReader::open(dir.path()).unwrap();
        let tree = ProofTree::new(reader.hashes(1, head).unwrap());
        assert_eq!(report.summary.merkle_root, Some(hex::encode(tree.root())));
    }
}

/// A signed tree of no events matches the empty tree (it is checked at the
/// end, since it has no last event), and does not hold up the others.
#[test]
fn a_checkpoint_of_no_events_matches_the_empty_tree() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    checkpoint_at(dir.path(), [0, 5, head]);
    let report = verify_dir(dir.path(), 0);
    assert_eq!(report.finding, None);
    let outcomes: Vec<(u64, &str)> = report
        .summary
        .checkpoints
        .iter()
        .map(|c| (c.size, c.outcome))
        .collect();
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes.iter().all(|(_, o)| *o == "matches"),
        "{outcomes:?}"
    );
    // Another root for size 0 is not of this (or any) log.
    let reader = LogReader::open(dir.path()).unwrap();
    let plan = Plan {
        roots: vec![ExpectedRoot {
            size: 0,
            root: [7; 32],
            label: "forged".into(),
        }],
        ..Plan::whole_log()
    };
    let report = ledger_audit::verify(
        reader.all_records(),
        plan,
        &options(0),
        &mut NoObserver,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(finding(&report), (1, FindingKind::CheckpointMismatch));
}

#[test]
fn a_flipped_byte_is_named_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let mut value = record(tree, 7);
        // Inside the actor's id: still JSON, still schema-valid, another hash.
        let at = 32 + value[32..].windows(5).position(|w| w == b"alice").unwrap();
        value[at] = b'A';
        tree.insert(keys::event(7), value).unwrap();
    });
    assert_eq!(
        finding(&verify_dir(dir.path(), 2)),
        (7, FindingKind::HashMismatch)
    );
}

#[test]
fn a_byte_flipped_into_garbage_is_a_decode_finding() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let mut value = record(tree, 3);
        value[32] = b'[';
        tree.insert(keys::event(3), value).unwrap();
    });
    assert_eq!(
        finding(&verify_dir(dir.path(), 0)),
        (3, FindingKind::Decode)
    );
}

#[test]
fn a_dropped_event_is_named_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        tree.remove(keys::event(9)).unwrap();
    });
    assert_eq!(
        finding(&verify_dir(dir.path(), 2)),
        (9, FindingKind::MissingEvent)
    );
}

#[test]
fn swapped_events_are_named_at_the_first_of_them() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    tamper(dir.path(), |tree| {
        let (a, b) = (record(tree, 6), record(tree, 11));
        tree.insert(keys::event(6), b).unwrap();
        tree.insert(keys::event(11), a).unwrap();
    });
    assert_eq!(
        finding(&verify_dir(dir.path(), 2)),
        (6, FindingKind::PositionMismatch)
    );
}

#[test]
fn a_truncated_tail_is_caught_by_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    checkpoint_at(dir.path(), [head]);
    tamper(dir.path(), |tree| {
        for p in head - 2..=head {
            tree.remove(keys::event(p)).unwrap();
        }
    });
    let report = verify_dir(dir.path(), 2);
    assert_eq!(finding(&report), (head - 2, FindingKind::Truncated));
    assert_eq!(report.finding.unwrap().until, Some(head));
}

/// Changes the actor of `from` and re-chains every event after it, so every
/// hash and link recomputes; returns the new hashes.
fn rewrite_suffix(dir: &Path, from: u64, head: u64) {
    tamper(dir, |tree| {
        let mut prev = envelope(&record(tree, from - 1)).hash;
        for p in from..=head {
            let mut env = envelope(&record(tree, p));
            if p == from {
                env.actor = Agent {
                    agent_id: "mallory".into(),
                    ..env.actor.clone()
                };
            }
            env.prev_hash = prev;
            prev = hex::encode(store_envelope(tree, &env));
        }
    });
}

#[test]
fn a_rewritten_suffix_passes_the_chain_but_not_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    // A server checkpointing after every commit.
    checkpoint_at(dir.path(), 1..=head);
    rewrite_suffix(dir.path(), 8, head);
    // Without checkpoints the rewrite is invisible.
    let reader = LogReader::open(dir.path()).unwrap();
    let blind = ledger_audit::verify(
        reader.all_records(),
        Plan::whole_log(),
        &options(2),
        &mut NoObserver,
        &mut |_| {},
    )
    .unwrap();
    drop(reader);
    assert_eq!(blind.finding, None);
    let report = verify_dir(dir.path(), 2);
    let f = report.finding.clone().unwrap();
    assert_eq!(
        (f.position, f.kind, f.until),
        (8, FindingKind::CheckpointMismatch, Some(8))
    );
}

#[test]
fn sparse_checkpoints_bound_a_rewrite_to_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    checkpoint_at(dir.path(), [5, 10, head]);
    rewrite_suffix(dir.path(), 8, head);
    let f = verify_dir(dir.path(), 2).finding.unwrap();
    assert_eq!(
        (f.position, f.kind, f.until),
        (6, FindingKind::CheckpointMismatch, Some(10))
    );
}

#[test]
fn proofs_hold_for_the_honest_log_and_fail_for_the_rewritten_one() {
    let dir = tempfile::tempdir().unwrap();
    let head = build(dir.path());
    checkpoint_at(dir.path(), [6, head]);
    let stored = CheckpointStore::new(dir.path()).list().unwrap();
    let (old, new) = (&stored[0].1.checkpoint, &stored[1].1.checkpoint);
    let reader = LogReader::open(dir.path()).unwrap();
    let hashes = reader.hashes(1, head).unwrap();
    let tree = ProofTree::new(hashes.clone());
    for (i, leaf) in hashes.iter().enumerate() {
        verify_inclusion(leaf, &tree.prove_inclusion(i as u64), &new.root).unwrap();
    }
    verify_consistency(&tree.prove_consistency(6), &old.root, &new.root).unwrap();
    drop(reader);

    rewrite_suffix(dir.path(), 4, head);
    let reader = LogReader::open(dir.path()).unwrap();
    let forged = ProofTree::new(reader.hashes(1, head).unwrap());
    // The rewritten events are not in the signed tree...
    let leaf = reader.hashes(4, 4).unwrap()[0];
    assert!(verify_inclusion(&leaf, &forged.prove_inclusion(3), &new.root).is_err());
    // ...and a tree re-signed after the rewrite does not extend the old checkpoint.
    assert!(verify_consistency(&forged.prove_consistency(6), &old.root, &forged.root()).is_err());
}

// ---- the domain rules, on crafted logs ----

fn client(id: Uuid, version: u64, data: EventData) -> EventDraft {
    EventDraft {
        token_id: id,
        token_kind: TokenKind::Client,
        workspace_id: "acme".into(),
        version,
        data,
    }
}

fn issued(name: &str) -> EventData {
    let now = Timestamp::parse("2026-01-15T09:00:00.000Z").unwrap();
    EventData::ClientTokenIssued(ClientTokenIssued {
        expires: None,
        import: None,
        issued_at: now,
        jwt: JwtRef {
            exp: None,
            iat: now.secs(),
            jti: Uuid::new_v4().to_string(),
            kid: "0123456789abcdef".into(),
        },
        name: Some(name.into()),
        permission_groups: Vec::new(),
        provided_resource_id: None,
    })
}

/// The published records of a chain of drafts, all at one time.
fn chain(drafts: Vec<EventDraft>) -> Vec<Result<Record, ledger_audit::AuditError>> {
    chain_timed(
        drafts
            .into_iter()
            .map(|d| (d, "2026-01-15T09:00:00.000Z"))
            .collect(),
    )
}

/// The published records of a chain of drafts, each at its own time.
fn chain_timed(drafts: Vec<(EventDraft, &str)>) -> Vec<Result<Record, ledger_audit::AuditError>> {
    let mut prev = GENESIS_HASH.to_owned();
    drafts
        .into_iter()
        .enumerate()
        .map(|(i, (d, at))| {
            let (env, _) = d.stamp(StampMeta {
                event_id: Uuid::now_v7(),
                position: i as u64 + 1,
                occurred_at: Timestamp::parse(at).unwrap(),
                actor: Agent::system(),
                command_id: Uuid::new_v4(),
                correlation_id: None,
                prev_hash: prev.clone(),
            });
            prev = env.hash.clone();
            Ok(Record::Published {
                sequence: None,
                bytes: env.to_json_bytes(),
                message: None,
            })
        })
        .collect()
}

fn rule_finding(drafts: Vec<EventDraft>) -> Option<(u64, FindingKind)> {
    let report = ledger_audit::verify(
        chain(drafts).into_iter(),
        Plan::whole_log(),
        &options(0),
        &mut NoObserver,
        &mut |_| {},
    )
    .unwrap();
    report.finding.map(|f| (f.position, f.kind))
}

#[test]
fn events_the_rules_would_not_produce_are_findings() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let trashed = || EventData::TokenTrashed(TokenTrashed::default());
    let restored = || EventData::TokenRestored(TokenRestored {});
    let revoked = || EventData::TokenRevoked(TokenRevoked::default());
    let rename = |n: &str| {
        EventData::ClientTokenUpdated(ClientTokenUpdated {
            name: Some(Some(n.into())),
            ..Default::default()
        })
    };
    // The honest story passes.
    assert_eq!(
        rule_finding(vec![
            client(a, 1, issued("x")),
            client(a, 2, trashed()),
            client(a, 3, restored())
        ]),
        None
    );
    // An event on a token no event created.
    assert_eq!(
        rule_finding(vec![client(a, 1, issued("x")), client(b, 2, trashed())]),
        Some((2, FindingKind::UnknownToken))
    );
    // Restored while not in the trash.
    assert_eq!(
        rule_finding(vec![client(a, 1, issued("x")), client(a, 2, restored())]),
        Some((2, FindingKind::NotTrashed))
    );
    // Anything after a revocation but trash and purge.
    assert_eq!(
        rule_finding(vec![
            client(a, 1, issued("x")),
            client(a, 2, revoked()),
            client(a, 3, rename("y"))
        ]),
        Some((3, FindingKind::Revoked))
    );
    assert_eq!(
        rule_finding(vec![
            client(a, 1, issued("x")),
            client(a, 2, revoked()),
            client(a, 3, trashed()),
            client(a, 4, restored())
        ]),
        Some((4, FindingKind::Revoked))
    );
    // Two live names that collide (case-insensitively), by issue or by rename.
    assert_eq!(
        rule_finding(vec![
            client(a, 1, issued("Name")),
            client(b, 1, issued("name"))
        ]),
        Some((2, FindingKind::NameTaken))
    );
    assert_eq!(
        rule_finding(vec![
            client(a, 1, issued("x")),
            client(b, 1, issued("y")),
            client(b, 2, rename("X"))
        ]),
        Some((3, FindingKind::NameTaken))
    );
    // A creation event that is not at version 1, and one for a token that exists.
    assert_eq!(
        rule_finding(vec![client(a, 2, issued("x"))]),
        Some((1, FindingKind::Schema))
    );
    assert_eq!(
        rule_finding(vec![client(a, 1, issued("x")), client(a, 2, issued("y"))]),
        Some((2, FindingKind::Schema))
    );
    // A version gap.
    assert_eq!(
        rule_finding(vec![client(a, 1, issued("x")), client(a, 3, trashed())]),
        Some((2, FindingKind::VersionGap))
    );
    // Anything after a purge.
    let purged = || EventData::TokenPurged(ledger_core::event::TokenPurged { forced: true });
    assert_eq!(
        rule_finding(vec![
            client(a, 1, issued("x")),
            client(a, 2, purged()),
            client(a, 3, trashed())
        ]),
        Some((3, FindingKind::AfterPurge))
    );
}

#[test]
fn without_the_schema_the_rules_still_catch_creation_mistakes() {
    let a = Uuid::new_v4();
    let run = |drafts| {
        let opts = VerifyOptions {
            schema: false,
            threads: 0,
        };
        ledger_audit::verify(
            chain(drafts).into_iter(),
            Plan::whole_log(),
            &opts,
            &mut NoObserver,
            &mut |_| {},
        )
        .unwrap()
        .finding
        .map(|f| (f.position, f.kind))
    };
    assert_eq!(
        run(vec![client(a, 2, issued("x"))]),
        Some((1, FindingKind::VersionGap))
    );
    assert_eq!(
        run(vec![client(a, 1, issued("x")), client(a, 2, issued("y"))]),
        Some((2, FindingKind::TokenExists))
    );
}

#[test]
fn events_earlier_than_the_one_before_are_counted_not_findings() {
    let verify = |records| {
        ledger_audit::verify(
            records,
            Plan::whole_log(),
            &options(0),
            &mut NoObserver,
            &mut |_| {},
        )
        .unwrap()
    };
    let (a, b, c, d) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let records = chain_timed(vec![
        (client(a, 1, issued("a")), "2026-01-15T09:00:00.000Z"),
        (client(b, 1, issued("b")), "2026-01-15T09:00:00.000Z"),
        (client(c, 1, issued("c")), "2026-01-15T08:59:59.999Z"),
        (client(d, 1, issued("d")), "2026-01-15T08:00:00.000Z"),
    ]);
    let report = verify(records.into_iter());
    // An older build's restart with the clock set back wrote such a log
    // honestly: every event verifies, and the summary says where time ran back.
    assert_eq!(report.finding, None);
    assert_eq!(report.summary.events, 4);
    assert_eq!(
        report.summary.time_reversals,
        Some(TimeReversals { first: 3, count: 2 })
    );
    let records = chain_timed(vec![
        (client(a, 1, issued("a")), "2026-01-15T09:00:00.000Z"),
        (client(b, 1, issued("b")), "2026-01-15T09:00:00.001Z"),
    ]);
    assert_eq!(verify(records.into_iter()).summary.time_reversals, None);
}
