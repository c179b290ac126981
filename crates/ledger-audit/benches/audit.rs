//! `cargo bench -p ledger-audit --bench audit`: the audit tools on a 1M-event log.
//!
//! Builds a log of `AUDIT_BENCH_EVENTS` (default 1,000,000) legal events
//! straight into a sled `log` tree (250k client tokens, each issued,
//! assigned a group, rotated and renamed, in interleaved order), signs a
//! checkpoint of it, and times: `audit verify` on the data dir (one core,
//! and with worker threads; with and without the schema check), `audit
//! export` and `audit verify --file`, and `audit replay` (views at the head,
//! and a diff of two points). Prints one line per measurement.
//!
//! `AUDIT_BENCH_ONLY=<text>` runs only the measurements whose label
//! contains the text (for profiling one of them); the log is built anyway.

/// The allocator the `tokenledger` binary uses, so figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ledger_audit::export::{export, verify_export, ExportRequest};
use ledger_audit::replay::{diff_snapshots, replay, Point};
use ledger_audit::verify::{ExpectedRoot, NoObserver, VerifyOptions};
use ledger_audit::{Checkpointer, LogReader, Plan};
use ledger_core::event::{
    AssignedPermissionGroup, ClientTokenIssued, ClientTokenRotated, ClientTokenUpdated, JwtRef,
    PermissionGroupsAssigned, StampMeta, GENESIS_HASH,
};
use ledger_core::{Agent, AgentType, EventData, EventDraft, Timestamp, TokenKind};
use ledger_store::keys;
use uuid::Uuid;

/// Tokens whose events interleave at any time.
const INTERLEAVE: usize = 64;

fn main() {
    let events: u64 = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    build(dir.path(), events);
    println!(
        "build: {events} events in {:.1} s",
        t.wall.elapsed().as_secs_f64()
    );

    let reader = LogReader::open(dir.path()).unwrap();
    let now = Timestamp::parse("2026-06-01T00:00:00Z").unwrap();
    let t = Instant::now();
    let signed = Checkpointer::open_on(dir.path(), reader.clone())
        .unwrap()
        .checkpoint_at(events, now)
        .unwrap();
    report("checkpoint (read hashes, root, sign)", events, t);
    let roots = vec![ExpectedRoot {
        size: signed.checkpoint.size,
        root: signed.checkpoint.root,
        label: "bench".into(),
    }];

    for (label, threads, schema) in [
        ("verify data dir, 1 core, all checks", 0, true),
        ("verify data dir, 2 workers, all checks", 2, true),
        ("verify data dir, 1 core, no schema", 0, false),
        ("verify data dir, 2 workers, no schema", 2, false),
    ] {
        if !wanted(label) {
            continue;
        }
        let plan = Plan {
            roots: roots.clone(),
            ..Plan::whole_log()
        };
        let options = VerifyOptions { schema, threads };
        let t = Instant::now();
        let r = ledger_audit::verify(
            reader.all_records(),
            plan,
            &options,
            &mut NoObserver,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(r.finding, None);
        assert_eq!(r.summary.events, events);
        report(label, events, t);
    }

    let file = dir.path().join("export.jsonl");
    const FILE_ROWS: [(&str, usize, bool); 3] = [
        ("verify file, 1 core, all checks", 0, true),
        ("verify file, 2 workers, all checks", 2, true),
        ("verify file, 1 core, no schema", 0, false),
    ];
    const EXPORT_ROW: &str = "export (verifying as it writes, all checks, 1 core)";
    if wanted(EXPORT_ROW) || FILE_ROWS.iter().any(|(label, _, _)| wanted(label)) {
        let t = Instant::now();
        let request = ExportRequest {
            from: 1,
            to: None,
            workspace: None,
        };
        let options = VerifyOptions::default();
        export(dir.path(), &reader, &request, &file, &options, &mut |_| {})
            .unwrap()
            .unwrap();
        report(EXPORT_ROW, events, t);
    }
    for (label, threads, schema) in FILE_ROWS {
        if !wanted(label) {
            continue;
        }
        let options = VerifyOptions { schema, threads };
        let t = Instant::now();
        let v = verify_export(&file, &[], &options, &mut |_| {}).unwrap();
        assert_eq!(v.report.finding, None);
        report(label, events, t);
    }

    // The replay rows' labels carry counts: selected by "replay" in the filter.
    if std::env::var("AUDIT_BENCH_ONLY").is_ok_and(|only| !only.contains("replay")) {
        return;
    }
    for threads in [0, 2] {
        let options = VerifyOptions {
            schema: false,
            threads,
        };
        let t = Instant::now();
        let snaps = replay(
            &reader,
            &[Point::Position(events)],
            None,
            &options,
            &mut |_| {},
        )
        .unwrap()
        .unwrap();
        report(
            &format!(
                "replay to the head ({} views), {threads} workers",
                snaps[0].tokens.len()
            ),
            events,
            t,
        );
    }
    let t = Instant::now();
    let options = VerifyOptions::default();
    let snaps = replay(
        &reader,
        &[Point::Position(events / 2), Point::Position(events)],
        None,
        &options,
        &mut |_| {},
    )
    .unwrap()
    .unwrap();
    let changes = diff_snapshots(&snaps[0], &snaps[1]);
    report(
        &format!(
            "replay --diff middle head ({} tokens changed), 1 core",
            changes.len()
        ),
        events,
        t,
    );
}

/// Whether `AUDIT_BENCH_ONLY` (unset: everything) selects the measurement `label`.
fn wanted(label: &str) -> bool {
    std::env::var("AUDIT_BENCH_ONLY").map_or(true, |only| label.contains(&only))
}

/// A start time: wall clock, and CPU time of this thread and of the process.
struct Instant {
    wall: std::time::Instant,
    thread_cpu: f64,
    process_cpu: f64,
}

impl Instant {
    fn now() -> Instant {
        Instant {
            wall: std::time::Instant::now(),
            thread_cpu: cpu_secs("/proc/thread-self/stat"),
            process_cpu: cpu_secs("/proc/self/stat"),
        }
    }
}

/// utime + stime of a /proc stat file, in seconds (Linux; 0 elsewhere).
fn cpu_secs(path: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints wall time and CPU time: on a shared machine the wall clock says
/// little about one core, the calling thread's CPU time does (with no
/// workers, all the work is on that thread).
fn report(label: &str, events: u64, t: Instant) {
    let secs = t.wall.elapsed().as_secs_f64();
    let thread = cpu_secs("/proc/thread-self/stat") - t.thread_cpu;
    let process = cpu_secs("/proc/self/stat") - t.process_cpu;
    println!(
        "{label}: {secs:.2} s wall ({:.0} events/s); CPU {thread:.2} s on this thread ({:.0} events per CPU-second), {process:.2} s all threads",
        events as f64 / secs,
        events as f64 / thread.max(0.01),
    );
}

/// Writes `events` legal events into `dir/ledger.sled`, tree `log`.
fn build(dir: &std::path::Path, events: u64) {
    let db = sled::Config::new()
        .path(dir.join("ledger.sled"))
        .cache_capacity(256 << 20)
        .open()
        .unwrap();
    let log = db.open_tree("log").unwrap();
    let actor = Agent {
        agent_id: "bench".into(),
        agent_type: AgentType::Service,
    };
    let t0 = Timestamp::parse("2026-01-01T00:00:00.000Z").unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    let mut batch = sled::Batch::default();
    let mut position = 0u64;
    let mut group = 0u64;
    'outer: loop {
        let ids: Vec<Uuid> = (0..INTERLEAVE).map(|_| Uuid::new_v4()).collect();
        for step in 1..=4u64 {
            for (i, id) in ids.iter().enumerate() {
                if position == events {
                    break 'outer;
                }
                position += 1;
                let at = Timestamp::from_millis(t0.millis() + position as i64).unwrap();
                let n = group * INTERLEAVE as u64 + i as u64;
                let data = match step {
                    1 => EventData::ClientTokenIssued(ClientTokenIssued {
                        expires: None,
                        import: None,
                        issued_at: at,
                        jwt: jwt(at),
                        name: Some(format!("token-{n}")),
                        permission_groups: vec![group_of(&actor, at, "pg_read")],
                        provided_resource_id: Some(format!("user-{n}")),
                    }),
                    2 => EventData::PermissionGroupsAssigned(PermissionGroupsAssigned {
                        permission_groups: vec![group_of(&actor, at, "pg_write")],
                    }),
                    3 => EventData::ClientTokenRotated(ClientTokenRotated {
                        issued_at: at,
                        jwt: jwt(at),
                    }),
                    _ => EventData::ClientTokenUpdated(ClientTokenUpdated {
                        name: Some(Some(format!("renamed-{n}"))),
                        ..Default::default()
                    }),
                };
                let draft = EventDraft {
                    token_id: *id,
                    token_kind: TokenKind::Client,
                    workspace_id: format!("ws{}", n % 16),
                    version: step,
                    data,
                };
                let (env, bytes) = draft.stamp(StampMeta {
                    event_id: Uuid::now_v7(),
                    position,
                    occurred_at: at,
                    actor: actor.clone(),
                    command_id: Uuid::new_v4(),
                    correlation_id: None,
                    prev_hash: std::mem::take(&mut prev),
                });
                let mut value = hex::decode(&env.hash).unwrap();
                value.extend_from_slice(&bytes);
                batch.insert(&keys::event(position), value);
                prev = env.hash;
                if position.is_multiple_of(10_000) {
                    log.apply_batch(std::mem::take(&mut batch)).unwrap();
                }
            }
        }
        group += 1;
    }
    log.apply_batch(batch).unwrap();
    db.flush().unwrap();
}

fn jwt(at: Timestamp) -> JwtRef {
    JwtRef {
        exp: None,
        iat: at.secs(),
        jti: Uuid::now_v7().to_string(),
        kid: "3f9a1c0b5e7d2a64".into(),
    }
}

fn group_of(actor: &Agent, at: Timestamp, id: &str) -> AssignedPermissionGroup {
    AssignedPermissionGroup {
        assigned_at: at,
        assigned_by: actor.clone(),
        permission_group_id: id.into(),
    }
}
