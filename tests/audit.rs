//! `tokenledger audit` end to end: the real binary on a temporary data dir.
//!
//! Tampering is done the way an attacker with the disk would: straight in the
//! sled `log` tree while no tokenledger process runs. Each test checks the
//! exit code, the position `audit verify` names, and its stable code.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{Run, BIN};
const USER: &str = "71c84cd2-91ac-4e6b-a74e-393c87d5f97d";
const EXIT_FINDING: i32 = 5;

struct Ledger {
    dir: tempfile::TempDir,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(BIN);
        c.arg("--data-dir").arg(self.data());
        // Audit commands cover every workspace unless a test scopes them.
        if !args.contains(&"audit") && !args.contains(&"--workspace") {
            c.arg("--workspace").arg("acme");
        }
        c.args(args);
        c.env_remove("TOKENLEDGER_WORKSPACE")
            .env_remove("TOKENLEDGER_DATA_DIR");
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().expect("run tokenledger"))
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs a command with `--json` and returns the token id it names.
    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let v = self.run(&all).ok().report();
        let t = &v["token"];
        t["resourceId"]
            .as_str()
            .or(t["id"].as_str())
            .unwrap()
            .to_owned()
    }

    /// A small history: 3 client tokens, 1 access token, renames, trash,
    /// restore, revoke, purge. Returns (client ids, access id).
    fn story(&self) -> (Vec<String>, String) {
        let a = self.token(&["issue", "--name", "alpha", "--group", "pg_read"]);
        let b = self.token(&["issue", "--name", "beta"]);
        let c = self.token(&["issue", "--name", "gamma"]);
        let secret = self.file("secret");
        std::fs::write(&secret, "ya29.secret-one").unwrap();
        let acc = self.token(&[
            "register",
            "--user",
            USER,
            "--provider",
            "google",
            "--account",
            "me@example.com",
            "--access-token-file",
            secret.to_str().unwrap(),
        ]);
        self.run(&["update", &a, "--name", "alpha-2"]).ok();
        self.run(&["trash", &b]).ok();
        self.run(&["restore", &b]).ok();
        self.run(&["revoke", &c]).ok();
        self.run(&["rotate", &a]).ok();
        (vec![a, b, c], acc)
    }

    fn verify(&self, extra: &[&str]) -> Run {
        let mut args = vec!["--json", "audit", "verify"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Opens the raw log tree (no tokenledger process may run).
    fn tamper(&self, f: impl FnOnce(&sled::Tree)) {
        let db = ledger_store::open_db(&self.data()).unwrap();
        let tree = db.open_tree("log").unwrap();
        f(&tree);
        tree.flush().unwrap();
    }
}

fn key(position: u64) -> Vec<u8> {
    ledger_store::keys::event(position).to_vec()
}

/// The finding of a failed `--json` verify: (position, kind).
fn finding(run: &Run) -> (u64, String) {
    assert_eq!(
        run.code, EXIT_FINDING,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let v = run.report();
    assert_eq!(v["ok"], false);
    (
        v["finding"]["position"].as_u64().unwrap(),
        v["finding"]["kind"].as_str().unwrap().to_owned(),
    )
}

fn head(l: &Ledger) -> u64 {
    l.verify(&[]).ok().report()["summary"]["headPosition"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_honest_log_verifies_with_a_summary() {
    let l = Ledger::new();
    l.story();
    l.run(&["audit", "checkpoint"]).ok();
    let v = l.verify(&["--checkpoint", "latest"]).ok().report();
    assert_eq!(v["ok"], true);
    assert_eq!(v["summary"]["events"], 9);
    assert_eq!(v["summary"]["tokens"], 4);
    assert_eq!(v["summary"]["checkpoints"][0]["outcome"], "matches");
    let human = l.run(&["audit", "verify"]).ok();
    assert!(
        human.stdout.starts_with("verified: no finding"),
        "{}",
        human.stdout
    );
}

#[test]
fn tampering_is_named_at_the_right_position() {
    // One byte flipped: the data still decodes and validates; the hash does not hold.
    let l = Ledger::new();
    l.story();
    l.tamper(|t| {
        let mut v = t.get(key(5)).unwrap().unwrap().to_vec();
        let at = 32 + v[32..].windows(7).position(|w| w == b"alpha-2").unwrap() + 4;
        v[at] = b'b';
        t.insert(key(5), v).unwrap();
    });
    assert_eq!(finding(&l.verify(&[])), (5, "hash_mismatch".into()));
    // One byte flipped into garbage.
    let l = Ledger::new();
    l.story();
    l.tamper(|t| {
        let mut v = t.get(key(2)).unwrap().unwrap().to_vec();
        v[40] = 0xff;
        t.insert(key(2), v).unwrap();
    });
    assert_eq!(finding(&l.verify(&[])), (2, "decode".into()));

    // One event dropped.
    let l = Ledger::new();
    l.story();
    l.tamper(|t| {
        t.remove(key(4)).unwrap();
    });
    assert_eq!(finding(&l.verify(&[])), (4, "missing_event".into()));

    // Two events swapped.
    let l = Ledger::new();
    l.story();
    l.tamper(|t| {
        let (a, b) = (
            t.get(key(3)).unwrap().unwrap(),
            t.get(key(7)).unwrap().unwrap(),
        );
        t.insert(key(3), b).unwrap();
        t.insert(key(7), a).unwrap();
    });
    let run = l.verify(&[]);
    assert_eq!(finding(&run), (3, "position_mismatch".into()));
    assert!(run.stderr.contains("position 3"), "{}", run.stderr);
}

#[test]
fn a_truncated_tail_and_a_rewritten_suffix_are_caught_by_checkpoints() {
    let l = Ledger::new();
    l.story();
    let head = head(&l);
    l.run(&["audit", "checkpoint"]).ok();
    let keep = l.file("old.note");
    std::fs::copy(l.data().join(format!("checkpoints/{head:020}.note")), &keep).unwrap();
    // The tail goes; the chain that is left is intact.
    l.tamper(|t| {
        t.remove(key(head)).unwrap();
        t.remove(key(head - 1)).unwrap();
    });
    let run = l.verify(&["--checkpoint", keep.to_str().unwrap()]);
    assert_eq!(finding(&run), (head - 1, "truncated".into()));

    // A rewritten suffix with every hash recomputed: only the signed root tells.
    let l = Ledger::new();
    l.story();
    for _ in 0..1 {
        l.run(&["audit", "checkpoint"]).ok();
    }
    let from = 6;
    l.tamper(|t| {
        let mut prev = hex::encode(&t.get(key(from - 1)).unwrap().unwrap()[..32]);
        for p in from..=head {
            let v = t.get(key(p)).unwrap().unwrap();
            let mut env = ledger_core::Envelope::from_json(&v[32..]).unwrap();
            if p == from {
                env.actor.agent_id = "mallory".into();
            }
            env.prev_hash = prev.clone();
            let bytes = env.canonical_bytes();
            prev = ledger_core::event::hash_hex(&bytes);
            let mut value = hex::decode(&prev).unwrap();
            value.extend_from_slice(&bytes);
            t.insert(key(p), value).unwrap();
        }
    });
    let run = l.verify(&[]);
    let v = run.report();
    assert_eq!(finding(&run), (1, "checkpoint_mismatch".into()));
    // One checkpoint at the head: the rewrite is somewhere in 1..=head.
    assert_eq!(v["finding"]["until"], head);
}

#[test]
fn checkpoints_after_every_command_name_a_rewrite_exactly() {
    let l = Ledger::new();
    l.run(&["issue", "--name", "one"]).ok();
    l.run(&["audit", "checkpoint"]).ok();
    let ids: Vec<String> = (0..4)
        .map(|i| l.token(&["issue", "--name", &format!("t{i}")]))
        .collect();
    for id in &ids {
        l.run(&["audit", "checkpoint"]).ok();
        l.run(&["rotate", id]).ok();
    }
    l.run(&["audit", "checkpoint"]).ok();
    let old = l.file("old.note");
    std::fs::copy(l.data().join(format!("checkpoints/{:020}.note", 5)), &old).unwrap();
    let head = head(&l);
    l.tamper(|t| {
        let mut prev = hex::encode(&t.get(key(6)).unwrap().unwrap()[..32]);
        for p in 7..=head {
            let v = t.get(key(p)).unwrap().unwrap();
            let mut env = ledger_core::Envelope::from_json(&v[32..]).unwrap();
            if p == 7 {
                env.actor.agent_id = "mallory".into();
            }
            env.prev_hash = prev.clone();
            let bytes = env.canonical_bytes();
            prev = ledger_core::event::hash_hex(&bytes);
            let mut value = hex::decode(&prev).unwrap();
            value.extend_from_slice(&bytes);
            t.insert(key(p), value).unwrap();
        }
    });
    let run = l.verify(&[]);
    let v = run.report();
    assert_eq!(finding(&run), (7, "checkpoint_mismatch".into()));
    assert_eq!(v["finding"]["until"], 7);
    // The attacker re-signs a checkpoint of the rewritten log (they hold the
    // data dir, key included): it does not extend the auditor's old one.
    l.run(&["audit", "checkpoint"]).ok();
    let newest = std::fs::read_dir(l.data().join("checkpoints"))
        .unwrap()
        .count();
    assert!(newest >= 6);
    let new = l.file("new.note");
    std::fs::copy(l.data().join(format!("checkpoints/{head:020}.note")), &new).unwrap();
    let run = l.run(&[
        "--json",
        "audit",
        "consistency",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(run.code, EXIT_FINDING, "{} {}", run.stdout, run.stderr);
}

#[test]
fn inclusion_and_consistency_proofs_verify_with_nothing_but_files() {
    let l = Ledger::new();
    let (clients, _) = l.story();
    l.run(&["audit", "checkpoint"]).ok();
    let old = l.file("old.note");
    let first = std::fs::read_dir(l.data().join("checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&first, &old).unwrap();
    l.run(&["trash", &clients[1]]).ok();
    l.run(&["audit", "checkpoint"]).ok();
    let new = l.file("new.note");
    std::fs::copy(l.data().join(format!("checkpoints/{:020}.note", 10)), &new).unwrap();
    let vkey = l.run(&["audit", "key"]).ok().stdout.trim().to_owned();

    // The event, as `history --json` shows it, and its proof.
    let history = l.run(&["--json", "history", &clients[0]]).ok().report();
    let event = &history["events"][1];
    let event_file = l.file("event.json");
    std::fs::write(&event_file, event.to_string()).unwrap();
    let proof = l
        .run(&["audit", "prove", event["eventId"].as_str().unwrap()])
        .ok();
    let proof_file = l.file("proof.json");
    std::fs::write(&proof_file, &proof.stdout).unwrap();
    let p = proof.report();
    assert_eq!(p["treeSize"], 10);
    assert_eq!(p["leafIndex"], event["position"].as_u64().unwrap() - 1);

    let elsewhere = Ledger::new(); // no data dir: nothing but the files
    let verify_proof = |event: &Path, proof: &Path, checkpoint: &str, key: &str| {
        elsewhere.run(&[
            "audit",
            "verify-proof",
            "--event",
            event.to_str().unwrap(),
            "--proof",
            proof.to_str().unwrap(),
            "--checkpoint",
            checkpoint,
            "--key",
            key,
        ])
    };
    let check =
        |event: &Path, proof: &Path| verify_proof(event, proof, new.to_str().unwrap(), &vkey);
    let ok = check(&event_file, &proof_file).ok();
    assert!(ok.stdout.starts_with("verified:"), "{}", ok.stdout);

    // An altered event does not verify: its hash no longer holds, and with a
    // recomputed hash it is not the leaf of the signed tree.
    let mut altered: Value = event.clone();
    altered["actor"]["agentId"] = "mallory".into();
    let altered_file = l.file("altered.json");
    std::fs::write(&altered_file, altered.to_string()).unwrap();
    assert_eq!(check(&altered_file, &proof_file).code, EXIT_FINDING);
    let env = ledger_core::Envelope::from_json(altered.to_string().as_bytes()).unwrap();
    altered["hash"] = env.computed_hash().into();
    std::fs::write(&altered_file, altered.to_string()).unwrap();
    assert_eq!(check(&altered_file, &proof_file).code, EXIT_FINDING);
    // Another event, intact, against this proof: not proven, a finding too.
    let other_file = l.file("other-event.json");
    std::fs::write(&other_file, history["events"][0].to_string()).unwrap();
    let run = check(&other_file, &proof_file);
    assert_eq!(run.code, EXIT_FINDING, "{}", run.stderr);
    assert!(run.stderr.contains("proof_mismatch"), "{}", run.stderr);
    // A checkpoint file that is not there is a usage error.
    let run = verify_proof(&event_file, &proof_file, "/nonexistent/cp.note", &vkey);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // A wrong key is refused.
    let other_key = Ledger::new();
    std::fs::create_dir_all(other_key.data()).unwrap();
    let wrong = other_key
        .run(&["audit", "key"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let run = verify_proof(&event_file, &proof_file, new.to_str().unwrap(), &wrong);
    assert_eq!(run.code, EXIT_FINDING);
    // Without a key the answer would stand on a signature nobody checked:
    // refused, unless the caller asks for the proof alone.
    let args = [
        "audit",
        "verify-proof",
        "--event",
        event_file.to_str().unwrap(),
        "--proof",
        proof_file.to_str().unwrap(),
        "--checkpoint",
        new.to_str().unwrap(),
    ];
    let e = refused(&elsewhere.run(&[&["--json"][..], &args[..]].concat()), 2);
    assert_eq!(e["field"], "key", "{e}");
    let unsigned = elsewhere
        .run(&[&["--json"][..], &args[..], &["--unsigned"][..]].concat())
        .ok();
    assert_eq!(unsigned.json()["signatureChecked"], false);
    assert!(
        unsigned.stderr.contains("NOT checked"),
        "{}",
        unsigned.stderr
    );

    // Consistency: computed from the data dir, then checked from the printed proof alone.
    let c = l
        .run(&[
            "--json",
            "audit",
            "consistency",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ])
        .ok()
        .report();
    assert_eq!(c["ok"], true);
    let cproof = l.file("consistency.json");
    std::fs::write(&cproof, c["proof"].to_string()).unwrap();
    elsewhere
        .run(&[
            "audit",
            "consistency",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--proof",
            cproof.to_str().unwrap(),
            "--key",
            &vkey,
        ])
        .ok();
    // The printed answers themselves are proofs too: the `--json` one as it
    // is, and the human one (a status line, then the proof). In a data dir
    // its key checks the signatures.
    let printed = l.run(&[
        "audit",
        "consistency",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    let human = l.file("consistency.txt");
    std::fs::write(&human, printed.ok().stdout.as_bytes()).unwrap();
    let wrapped = l.file("consistency-wrapped.json");
    std::fs::write(&wrapped, c.to_string()).unwrap();
    for proof in [&human, &wrapped] {
        let run = l.run(&[
            "audit",
            "consistency",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--proof",
            proof.to_str().unwrap(),
        ]);
        let run = run.ok();
        assert!(run.stdout.starts_with("consistent"), "{}", run.stdout);
        assert!(!run.stderr.contains("NOT checked"), "{}", run.stderr);
    }
    // Swapped, they are not consistent (OLD larger than NEW).
    assert_ne!(
        elsewhere
            .run(&[
                "audit",
                "consistency",
                new.to_str().unwrap(),
                old.to_str().unwrap(),
                "--proof",
                cproof.to_str().unwrap(),
                "--key",
                &vkey
            ])
            .code,
        0
    );
}

/// Inputs an auditor got wrong (a path, a garbled or forged proof or
/// checkpoint) are refused by field with exit 2: never a panic, never
/// "storage", never a finding about the ledger.
#[test]
fn malformed_audit_inputs_are_refused_by_the_field_that_holds_them() {
    let l = Ledger::new();
    let (clients, _) = l.story();
    l.run(&["audit", "checkpoint"]).ok();
    let note = std::fs::read_dir(l.data().join("checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let note = note.to_str().unwrap();
    let export = l.file("all.jsonl");
    l.run(&["audit", "export", "--out", export.to_str().unwrap()])
        .ok();
    let field_of = |args: &[&str]| {
        let mut all = vec!["--json", "audit"];
        all.extend_from_slice(args);
        let e = refused(&l.run(&all), 2);
        assert_eq!(e["code"], "invalid_input", "{args:?}: {e}");
        e["field"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(
        field_of(&["verify", "--file", "/nonexistent/x.jsonl"]),
        "file"
    );
    assert_eq!(
        field_of(&[
            "replay",
            "--file",
            "/nonexistent/x.jsonl",
            "--position",
            "1"
        ]),
        "file"
    );
    assert_eq!(
        field_of(&["history", &clients[0], "--file", "/nonexistent/x.jsonl"]),
        "file"
    );
    assert_eq!(
        field_of(&["export", "--out", "/nonexistent/dir/x.jsonl"]),
        "out"
    );
    let garbled = l.file("garbled.note");
    std::fs::write(&garbled, "not a checkpoint\n").unwrap();
    let export_path = export.to_str().unwrap();
    assert_eq!(
        field_of(&[
            "verify",
            "--file",
            export_path,
            "--checkpoint",
            garbled.to_str().unwrap()
        ]),
        "checkpoint"
    );

    // A proof about a tree no log has, against a checkpoint edited to match
    // (unsigned checks only: --unsigned), for an event placed there.
    let history = l.run(&["--json", "history", &clients[0]]).ok().report();
    let mut event = history["events"][0].clone();
    event["position"] = json!(1u64 << 63 | 1);
    event.as_object_mut().unwrap().remove("hash");
    let event_file = l.file("far-event.json");
    std::fs::write(&event_file, event.to_string()).unwrap();
    let text = std::fs::read_to_string(note).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "18446744073709551615";
    let forged = l.file("forged.note");
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let proof = l.file("far-proof.json");
    std::fs::write(
        &proof,
        json!({"leafIndex": 1u64 << 63, "treeSize": u64::MAX, "hashes": []}).to_string(),
    )
    .unwrap();
    let far = [
        "verify-proof",
        "--event",
        event_file.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
        "--checkpoint",
        forged.to_str().unwrap(),
        "--unsigned",
    ];
    let mut all = vec!["--json", "audit"];
    all.extend_from_slice(&far);
    let e = refused(&l.run(&all), 2);
    assert_eq!(e["field"], "proof", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("larger than any log"),
        "{e}"
    );
    // An index past every position proves nothing: not a panic either.
    std::fs::write(
        &proof,
        json!({"leafIndex": u64::MAX, "treeSize": u64::MAX, "hashes": []}).to_string(),
    )
    .unwrap();
    let run = l.run(&[&["audit"][..], &far[..]].concat());
    assert_eq!(run.code, EXIT_FINDING, "{}", run.stderr);
    assert!(run.stderr.contains("proof_mismatch"), "{}", run.stderr);

    // A consistency proof that is not one is not a finding of inconsistency.
    let size: u64 = text.lines().nth(1).unwrap().parse().unwrap();
    let cproof = l.file("garbled-consistency.json");
    std::fs::write(
        &cproof,
        json!({"oldSize": size, "newSize": size, "hashes": ["zz"]}).to_string(),
    )
    .unwrap();
    assert_eq!(
        field_of(&[
            "consistency",
            note,
            note,
            "--proof",
            cproof.to_str().unwrap()
        ]),
        "proof"
    );
}

#[test]
fn purged_secrets_are_shredded_and_the_log_still_verifies() {
    let l = Ledger::new();
    let (_, acc) = l.story();
    let token: uuid::Uuid = acc.parse().unwrap();
    // The wrapped data key, as it sits in the key file before the purge: its
    // slot is the token id, a length byte, then the wrapped key.
    let wrapped = {
        let bytes = std::fs::read(l.data().join("datakeys.bin")).unwrap();
        let at = bytes
            .windows(16)
            .position(|w| w == token.as_bytes())
            .expect("the token has a key slot");
        let len = usize::from(bytes[at + 16]);
        bytes[at + 17..at + 17 + len].to_vec()
    };
    // Before: the secret opens.
    {
        let store = ledger_store::Store::open(&l.data(), Default::default()).unwrap();
        let events = store.token_events(&token, None).unwrap();
        let ledger_core::EventData::AccessTokenRegistered(r) = &events[0].data else {
            panic!()
        };
        let secret = store
            .open_secret(&token, "accessToken", &r.access_token)
            .unwrap();
        assert_eq!(secret.expose(), "ya29.secret-one");
        store.shutdown().unwrap();
    }
    l.run(&["purge", &acc, "--force"]).ok();
    {
        let store = ledger_store::Store::open(&l.data(), Default::default()).unwrap();
        let events = store.token_events(&token, None).unwrap();
        let ledger_core::EventData::AccessTokenRegistered(r) = &events[0].data else {
            panic!()
        };
        assert!(store
            .open_secret(&token, "accessToken", &r.access_token)
            .is_err());
        assert!(store.data_key(&token).unwrap().is_none());
        store.shutdown().unwrap();
    }
    // No file in the data dir holds a copy of the wrapped key any more: the
    // purge overwrote its slot in place (sled, which keeps removed values in
    // old segments, never held it).
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut all = Vec::new();
    files(&l.data(), &mut all);
    let holders: Vec<&PathBuf> = all
        .iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(wrapped.len())
                .any(|w| w == wrapped.as_slice())
        })
        .collect();
    assert!(
        holders.is_empty(),
        "the purged data key is still on disk in {holders:?}"
    );
    // The history keeps its events, sealed; the chain still verifies.
    l.verify(&[]).ok();
    let h = l.run(&["--json", "audit", "history", &acc]).ok().report();
    let last = h["entries"].as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "token_purged");
}

#[test]
fn an_export_of_a_later_range_verifies_on_its_own() {
    let l = Ledger::new();
    l.story();
    l.run(&["audit", "checkpoint"]).ok();
    let vkey = l.run(&["audit", "key"]).ok().stdout.trim().to_owned();
    let out = l.file("range.jsonl");
    let e = l
        .run(&[
            "--json",
            "audit",
            "export",
            "--from",
            "4",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok()
        .report();
    assert_eq!(e["events"], 6);
    assert_eq!(e["header"]["from"], 4);
    assert_eq!(e["inclusionProofs"], 1);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Header, 6 envelopes exactly as chained, 1 proof, the manifest.
    assert_eq!(lines.len(), 9);
    let manifest: Value = serde_json::from_str(lines[8]).unwrap();
    assert_eq!(
        manifest["manifest"]["positions"],
        serde_json::json!([[4, 6]])
    );
    let first: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(first["position"], 4);
    assert_eq!(
        first["prevHash"],
        serde_json::from_str::<Value>(lines[0]).unwrap()["prevHash"]
    );

    let elsewhere = Ledger::new();
    let v = elsewhere
        .run(&[
            "--json",
            "audit",
            "verify",
            "--file",
            out.to_str().unwrap(),
            "--key",
            &vkey,
        ])
        .ok()
        .report();
    assert_eq!(v["summary"]["firstPosition"], 4);
    assert_eq!(v["proofsVerified"], 1);

    // A changed line, a dropped line, a cut tail: each named.
    let write = |name: &str, lines: &[String]| {
        let p = l.file(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let mut changed = owned.clone();
    changed[3] = changed[3].replace("\"agentId\":\"", "\"agentId\":\"x");
    let run = elsewhere.verify(&["--file", write("changed.jsonl", &changed).to_str().unwrap()]);
    assert_eq!(finding(&run), (6, "hash_mismatch".into()));
    let mut dropped = owned.clone();
    dropped.remove(3);
    let run = elsewhere.verify(&["--file", write("dropped.jsonl", &dropped).to_str().unwrap()]);
    assert_eq!(finding(&run), (6, "missing_event".into()));
    let cut: Vec<String> = owned[..5].to_vec();
    let run = elsewhere.verify(&["--file", write("cut.jsonl", &cut).to_str().unwrap()]);
    assert_eq!(finding(&run), (8, "truncated".into()));
}

#[test]
fn a_workspace_export_carries_inclusion_proofs() {
    let l = Ledger::new();
    l.story();
    // Another workspace's events interleave.
    let other = l
        .run_env(
            &[
                "--workspace",
                "globex",
                "--json",
                "issue",
                "--name",
                "other",
            ],
            &[],
        )
        .ok()
        .report();
    assert!(other["token"]["resourceId"].is_string());
    l.run(&["issue", "--name", "delta"]).ok();
    l.run(&["audit", "checkpoint"]).ok();
    let out = l.file("acme.jsonl");
    let e = l
        .run(&[
            "--workspace",
            "acme",
            "--json",
            "audit",
            "export",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok()
        .report();
    assert_eq!(e["events"], 10);
    assert_eq!(e["inclusionProofs"], 10);
    let v = Ledger::new()
        .verify(&["--file", out.to_str().unwrap()])
        .ok()
        .report();
    assert_eq!(v["proofsVerified"], 10);
    assert_eq!(v["summary"]["events"], 10);
}

/// A workspace export lacks the other workspaces' events, so its links
/// cannot show a dropped line; its manifest does, by position.
#[test]
fn a_line_dropped_from_a_workspace_export_is_named_by_its_manifest() {
    let l = Ledger::new();
    l.story();
    l.run_env(&["--workspace", "globex", "issue", "--name", "other"], &[])
        .ok();
    l.run(&["issue", "--name", "delta"]).ok();
    let out = l.file("acme.jsonl");
    l.run(&[
        "--workspace",
        "acme",
        "audit",
        "export",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Header, acme's 10 events (position 10 is globex's), the manifest.
    assert_eq!(lines.len(), 12);
    let manifest: Value = serde_json::from_str(&lines[11]).unwrap();
    assert_eq!(
        manifest["manifest"],
        serde_json::json!({"events": 10, "positions": [[1, 9], [11, 1]]})
    );
    let elsewhere = Ledger::new();
    let v = elsewhere
        .verify(&["--file", out.to_str().unwrap()])
        .ok()
        .report();
    assert_eq!(v["summary"]["events"], 10);
    let verify_without = |name: &str, drop: usize| {
        let mut edited = lines.clone();
        edited.remove(drop);
        let p = l.file(name);
        std::fs::write(&p, edited.join("\n") + "\n").unwrap();
        finding(&elsewhere.verify(&["--file", p.to_str().unwrap()]))
    };
    // A whole token (the access token registered at position 4), the last
    // event, and the manifest itself.
    assert_eq!(
        verify_without("token.jsonl", 4),
        (4, "missing_event".into())
    );
    assert_eq!(
        verify_without("last.jsonl", 10),
        (11, "missing_event".into())
    );
    assert_eq!(
        verify_without("manifest.jsonl", 11),
        (12, "truncated".into())
    );

    let verify_edited = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut edited = lines.clone();
        edit(&mut edited);
        let p = l.file(name);
        std::fs::write(&p, edited.join("\n") + "\n").unwrap();
        elsewhere.verify(&["--file", p.to_str().unwrap()])
    };
    // A manifest that leaves a held event out, or miscounts.
    let run = verify_edited("unlisted.jsonl", &|e| {
        e[11] = r#"{"manifest":{"events":9,"positions":[[1,9]]}}"#.into();
    });
    assert_eq!(finding(&run), (11, "header_mismatch".into()));
    let run = verify_edited("miscounted.jsonl", &|e| {
        e[11] = r#"{"manifest":{"events":11,"positions":[[1,9],[11,1]]}}"#.into();
    });
    assert_eq!(finding(&run), (11, "header_mismatch".into()));
    // Anything after the manifest makes the file malformed.
    let run = verify_edited("after.jsonl", &|e| e.push(e[5].clone()));
    assert_eq!(run.code, 2, "{}", run.stderr);
    // A /1 file (before manifests) still verifies, with a warning.
    let run = verify_edited("v1.jsonl", &|e| {
        e.pop();
        e[0] = e[0].replace("tokenledger-export/2", "tokenledger-export/1");
    });
    let run = run.ok();
    assert!(run.stderr.contains("no manifest"), "{}", run.stderr);
}

#[test]
fn replay_shows_the_views_at_a_point_and_diffs_two_points() {
    let l = Ledger::new();
    let (clients, _) = l.story();
    let at4 = l
        .run(&["--json", "audit", "replay", "--position", "4"])
        .ok()
        .report();
    assert_eq!(at4["position"], 4);
    assert_eq!(at4["tokens"].as_array().unwrap().len(), 4);
    let d = l
        .run(&["--json", "audit", "replay", "--diff", "4", "9"])
        .ok()
        .report();
    let changes = d["changes"].as_array().unwrap();
    let alpha = changes
        .iter()
        .find(|c| c["tokenId"] == clients[0].as_str())
        .unwrap();
    assert_eq!(alpha["change"], "changed");
    let name = alpha["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "name")
        .unwrap();
    assert_eq!(
        (name["from"].as_str(), name["to"].as_str()),
        (Some("alpha"), Some("alpha-2"))
    );
    let gamma = changes
        .iter()
        .find(|c| c["tokenId"] == clients[2].as_str())
        .unwrap();
    assert!(gamma["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == "revoked" && f["to"] == true));
    // Added tokens appear as added; times work as points too.
    let d = l
        .run(&["--json", "audit", "replay", "--diff", "1", "2"])
        .ok()
        .report();
    assert_eq!(d["changes"][0]["change"], "added");
    let human = l.run(&["audit", "replay", "--diff", "4", "9"]).ok();
    assert!(
        human.stdout.contains("name: alpha -> alpha-2"),
        "{}",
        human.stdout
    );
    let t = l
        .run(&["audit", "replay", "--as-of", "2999-01-01T00:00:00Z"])
        .ok();
    assert!(t.stdout.contains("alpha-2"), "{}", t.stdout);
}

#[test]
fn history_shows_every_version_with_field_level_changes() {
    let l = Ledger::new();
    let (clients, acc) = l.story();
    let h = l
        .run(&["--json", "audit", "history", &clients[0]])
        .ok()
        .report();
    let entries = h["entries"].as_array().unwrap();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "client_token_issued",
            "client_token_updated",
            "client_token_rotated"
        ]
    );
    assert_eq!(
        entries[1]["changes"],
        serde_json::json!([{"path": "name", "from": "alpha", "to": "alpha-2"}])
    );
    assert!(entries[0]["actor"]["agentId"].is_string());
    // Secrets appear as fingerprints only.
    let secret = l.file("secret2");
    std::fs::write(&secret, "ya29.secret-two").unwrap();
    l.run(&[
        "refresh",
        &acc,
        "--access-token-file",
        secret.to_str().unwrap(),
    ])
    .ok();
    let h = l.run(&["audit", "history", &acc]).ok();
    assert!(
        h.stdout.contains("accessTokenFingerprint: hmac-sha256:"),
        "{}",
        h.stdout
    );
    assert!(!h.stdout.contains("ya29"), "{}", h.stdout);
    assert_eq!(
        l.run(&["audit", "history", &uuid::Uuid::new_v4().to_string()])
            .code,
        1
    );
}

/// The audit commands that read a data dir refuse `--nats` (they would read,
/// or for a checkpoint create, `./data` instead of the server's ledger), and
/// a checkpoint of a data dir without a ledger creates nothing.
#[test]
fn audit_commands_that_read_a_data_dir_neither_take_nats_nor_create_one() {
    let l = Ledger::new();
    let run = l.run(&["--json", "audit", "checkpoint"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("not_found"), "{}", run.stderr);
    assert!(!l.data().exists(), "a checkpoint created a ledger");
    let mut all = vec![
        "--json",
        "--nats",
        "nats://127.0.0.1:1",
        "audit",
        "checkpoint",
    ];
    let run = l.run(&all);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("\"field\":\"nats\""), "{}", run.stderr);
    // Replay, history and export read the stream instead (nobody listens there).
    let out = l.dir.path().join("x.jsonl");
    for args in [
        &["audit", "history", "00000000-0000-4000-8000-000000000000"][..],
        &["audit", "replay", "--position", "1"],
        &["audit", "export", "--out", out.to_str().unwrap()],
    ] {
        all.truncate(3);
        all.extend_from_slice(args);
        let run = l.run(&all);
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert_eq!(run.error()["code"], "unavailable", "{}", run.stderr);
    }
    assert!(!l.data().exists());
    assert!(!out.exists(), "an export that read nothing wrote a file");
    // --key checks the server's checkpoint: it means nothing to a data dir's export.
    let run = l.run(&[
        "--json", "audit", "export", "--key", "k", "--out", "x.jsonl",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error()["field"], "key", "{}", run.stderr);
}

/// `--json audit replay|history ...` from the data dir and from `file`
/// (read in another directory, with a NATS URL that an explicit --file
/// wins over): the same answer, as JSON and as text.
fn same_from_file(l: &Ledger, file: &Path, args: &[&str]) -> Value {
    let elsewhere = Ledger::new();
    let nats = [("TOKENLEDGER_NATS", "nats://127.0.0.1:1")];
    for json in [true, false] {
        let mut local: Vec<&str> = if json { vec!["--json"] } else { vec![] };
        local.extend_from_slice(args);
        let mut remote = local.clone();
        remote.extend_from_slice(&["--file", file.to_str().unwrap()]);
        let (a, b) = (l.run(&local).ok(), elsewhere.run_env(&remote, &nats).ok());
        assert_eq!(a.stdout, b.stdout, "{args:?}");
    }
    assert!(!elsewhere.data().exists());
    let mut local = vec!["--json"];
    local.extend_from_slice(args);
    l.run(&local).ok().report()
}

/// The `--json` error of a run that must fail with `code` and exit `exit`.
fn refused(run: &Run, exit: i32) -> Value {
    assert_eq!(
        run.code, exit,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.error()
}

#[test]
fn replay_and_history_from_an_export_are_those_of_the_data_dir() {
    let l = Ledger::new();
    let (clients, acc) = l.story();
    l.run_env(&["--workspace", "globex", "issue", "--name", "other"], &[])
        .ok();
    l.run(&["audit", "checkpoint"]).ok();
    let out = l.file("all.jsonl");
    l.run(&["audit", "export", "--out", out.to_str().unwrap()])
        .ok();
    let history = |id: &str| same_from_file(&l, &out, &["audit", "history", id]);
    let h = history(&clients[0]);
    assert_eq!(h["entries"].as_array().unwrap().len(), 3);
    assert_eq!(
        history(&acc)["entries"][0]["type"],
        "access_token_registered"
    );
    let time = h["entries"][1]["occurredAt"].as_str().unwrap().to_owned();
    for args in [
        &["audit", "replay", "--position", "4"][..],
        &["audit", "replay", "--position", "99"],
        &["audit", "replay", "--as-of", &time],
        &["audit", "replay", "--diff", "4", "10"],
        &["audit", "replay", "--diff", "1", &time],
        &["--workspace", "acme", "audit", "replay", "--position", "10"],
    ] {
        let v = same_from_file(&l, &out, args);
        assert!(v["tokens"].is_array() || v["changes"].is_array(), "{v}");
    }
    let at4 = same_from_file(&l, &out, &["audit", "replay", "--position", "4"]);
    assert_eq!(at4["tokens"].as_array().unwrap().len(), 4);
}

#[test]
fn a_tampered_export_stops_replay_and_history_at_the_bad_position() {
    let l = Ledger::new();
    let (clients, _) = l.story();
    let out = l.file("all.jsonl");
    l.run(&["audit", "export", "--out", out.to_str().unwrap()])
        .ok();
    // Line 6 is position 6: an actor renamed after the event was hashed.
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[6] = lines[6].replace("\"agentId\":\"", "\"agentId\":\"x");
    let bad = l.file("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let elsewhere = Ledger::new();
    // A file is verified whole: a point before the bad event does not help.
    for args in [
        &["audit", "replay", "--position", "2"][..],
        &["audit", "replay", "--diff", "1", "9"],
        &["audit", "history", &clients[0]],
    ] {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--file", bad.to_str().unwrap()]);
        let e = refused(&elsewhere.run(&all), EXIT_FINDING);
        assert_eq!(e["code"], "hash_mismatch", "{args:?}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.starts_with("position 6:"), "{args:?}: {message}");
    }
}

#[test]
fn partial_exports_answer_only_what_they_hold_in_full() {
    let l = Ledger::new();
    let (clients, _) = l.story();
    let globex = l.token(&["--workspace", "globex", "issue", "--name", "other"]);
    l.run(&["update", &clients[1], "--name", "beta-2"]).ok();
    let export = |name: &str, global: &[&str], flags: &[&str]| {
        let p = l.file(name);
        let mut all = global.to_vec();
        all.extend_from_slice(&["audit", "export", "--out", p.to_str().unwrap()]);
        all.extend_from_slice(flags);
        l.run(&all).ok();
        p
    };
    let later = export("later.jsonl", &[], &["--from", "4"]);
    let early = export("early.jsonl", &[], &["--to", "5"]);
    let acme = export("acme.jsonl", &["--workspace", "acme"], &[]);
    let elsewhere = Ledger::new();
    let from = |file: &Path, args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--file", file.to_str().unwrap()]);
        elsewhere.run(&all)
    };
    let field = |run: Run| refused(&run, 2)["field"].as_str().unwrap().to_owned();

    // From position 4: its tokens' first events are not in it.
    let run = from(&later, &["audit", "replay", "--position", "9"]);
    let e = refused(&run, 2);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("invalid_input"), Some("file"))
    );
    assert!(
        e["message"].as_str().unwrap().starts_with("--file: ")
            && e["message"]
                .as_str()
                .unwrap()
                .contains("starts at position 4"),
        "{e}"
    );
    assert_eq!(
        field(from(&later, &["audit", "history", &clients[0]])),
        "file"
    );

    // To position 5 of 11: positions up to 5 only, no times, no history.
    let at5 = from(&early, &["audit", "replay", "--position", "5"]).json();
    assert_eq!(
        at5,
        l.run(&["--json", "audit", "replay", "--position", "5"])
            .ok()
            .report()
    );
    assert_eq!(
        field(from(&early, &["audit", "replay", "--position", "6"])),
        "position"
    );
    assert_eq!(
        field(from(&early, &["audit", "replay", "--diff", "2", "7"])),
        "diff"
    );
    assert_eq!(
        field(from(
            &early,
            &["audit", "replay", "--as-of", "2999-01-01T00:00:00Z"]
        )),
        "asOf"
    );
    assert_eq!(
        field(from(&early, &["audit", "history", &clients[0]])),
        "file"
    );

    // One workspace: its own views, at times; its own tokens' histories.
    let acme_args = |args: &[&str]| {
        let mut all = vec!["--workspace", "acme"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let time_of = |id: &str, version: usize| {
        l.run(&["--json", "audit", "history", id]).ok().report()["entries"][version - 1]
            ["occurredAt"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // beta trashed (position 6), and globex's token issued (position 10).
    let (time, globex_time) = (time_of(&clients[1], 2), time_of(&globex, 1));
    for args in [
        acme_args(&["audit", "replay", "--as-of", &time]),
        acme_args(&["audit", "replay", "--as-of", &globex_time]),
        acme_args(&["audit", "replay", "--diff", &time, "2999-01-01T00:00:00Z"]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut local = vec!["--json"];
        local.extend_from_slice(&args);
        let (mut a, mut b) = (l.run(&local).ok().report(), from(&acme, &args).json());
        // The data dir replays every workspace's events up to the time;
        // the export, acme's only (at globex's issue, up to position 9).
        if args.contains(&globex_time.as_str()) {
            assert_eq!(
                (a["position"].as_u64(), b["position"].as_u64()),
                (Some(10), Some(9))
            );
        }
        for v in [&mut a, &mut b] {
            if v["changes"].is_array() {
                v["from"]["position"] = Value::Null;
            }
            v["position"] = Value::Null;
        }
        assert_eq!(a, b, "{args:?}");
    }
    assert_eq!(
        from(&acme, &["audit", "history", &clients[1]]).json(),
        l.run(&["--json", "audit", "history", &clients[1]])
            .ok()
            .report()
    );
    assert_eq!(
        field(from(&acme, &["audit", "replay", "--as-of", &time])),
        "workspace"
    );
    let globex_args = ["--workspace", "globex", "audit", "replay", "--as-of", &time];
    assert_eq!(field(from(&acme, &globex_args)), "workspace");
    let acme_position = acme_args(&["audit", "replay", "--position", "4"]);
    let acme_position: Vec<&str> = acme_position.iter().map(String::as_str).collect();
    assert_eq!(field(from(&acme, &acme_position)), "position");
    let run = from(&acme, &["audit", "history", &globex]);
    let e = refused(&run, 1);
    assert_eq!(e["code"], "not_found");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("holds workspace acme's events only"),
        "{e}"
    );
}

#[test]
fn every_tree_extends_the_empty_one_and_only_the_empty_one() {
    let l = Ledger::new();
    l.run(&["list"]).ok();
    let empty = l.run(&["--json", "audit", "checkpoint"]).ok().report();
    assert_eq!(empty["size"], 0, "{empty}");
    let zero = l.file("zero.note");
    std::fs::copy(l.data().join(format!("checkpoints/{:020}.note", 0)), &zero).unwrap();
    l.story();
    let head = l.run(&["--json", "audit", "checkpoint"]).ok().report();
    let head_size = head["size"].as_u64().unwrap();
    let new = l.data().join(format!("checkpoints/{head_size:020}.note"));
    let c = l
        .run(&[
            "--json",
            "audit",
            "consistency",
            zero.to_str().unwrap(),
            new.to_str().unwrap(),
        ])
        .ok()
        .report();
    assert_eq!(c["ok"], true);
    assert_eq!(c["proof"]["oldSize"], 0);

    // A "size 0" note whose root is not the empty tree's proves nothing.
    let text = std::fs::read_to_string(&zero).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into();
    let forged = l.file("forged-zero.note");
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let proof = l.file("zero-proof.json");
    std::fs::write(&proof, c["proof"].to_string()).unwrap();
    let run = l.run(&[
        "audit",
        "consistency",
        forged.to_str().unwrap(),
        new.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
        "--unsigned",
    ]);
    assert_eq!(run.code, EXIT_FINDING, "{}", run.stderr);
    assert!(run.stderr.contains("inconsistent"), "{}", run.stderr);
}
