//! `tokenledger keys …` and `tokenledger verify` on a data dir: rotation
//! keeps old strings verifying, new strings carry the new kid, the history
//! records who rotated, private keys stay in a 0600 file, and an inactive
//! string prints exactly `{"active": false}`.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

mod common;
use common::{Reaped, BIN};

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["--workspace", "acme", "--actor", "user:carol"])
        .args(args)
        .env_remove("TOKENLEDGER_NATS")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run(dir, &all);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn issue(dir: &Path) -> String {
    json(dir, &["issue"])["token"]["tokenStr"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let v: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

/// `keys rotate` on a data dir checks its actor as commands do, and a
/// refused rotation leaves the key history as it was.
#[test]
fn keys_rotate_refuses_a_malformed_actor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    issue(d);
    for actor in ["user:", "user:a\tb"] {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(d)
            .args(["--json", "--actor", actor, "keys", "rotate"])
            .env_remove("TOKENLEDGER_NATS")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{actor:?}: {out:?}");
        let e: Value = serde_json::from_slice(&out.stderr).unwrap();
        assert_eq!(e["error"]["field"], "actor.agentId", "{actor:?}: {e}");
    }
    let history = json(d, &["keys", "history"])["history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
}

#[test]
fn keys_rotate_list_jwks_history_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = issue(d);
    let first = json(d, &["keys", "list"]);
    let first_kid = first["activeKid"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&old), first_kid);

    let rotated = json(d, &["keys", "rotate"]);
    let new_kid = rotated["event"]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, first_kid);
    assert_eq!(rotated["event"]["actor"]["agentId"], "carol");
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 2);

    let fresh = issue(d);
    assert_eq!(kid_of(&fresh), new_kid);
    for s in [&old, &fresh] {
        let v = json(d, &["verify", s]);
        assert_eq!(v["active"], true, "{v}");
    }
    assert_eq!(json(d, &["verify", &old])["kid"], first_kid);

    let jwks = json(d, &["keys", "jwks"]);
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [first_kid.as_str(), new_kid.as_str()]);
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");

    let history = json(d, &["keys", "history"])["history"].clone();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["type"], "key_created");
    assert_eq!(history[1]["type"], "key_rotated");
    assert_eq!(history[1]["actor"]["agentId"], "carol");
    assert_eq!(history[1]["prevHash"], history[0]["hash"]);

    // HS256 on request.
    let hs = json(d, &["keys", "rotate", "--alg", "HS256"]);
    assert_eq!(hs["event"]["alg"], "HS256");
    let s = issue(d);
    assert_eq!(json(d, &["verify", &s])["active"], true);

    // Inactive: exactly {"active": false}, exit 0; a revoked token too.
    let (code, stdout, _) = run(d, &["--json", "verify", "not-a-token"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v, serde_json::json!({"active": false}));
    let (_, text, _) = run(d, &["verify", "not-a-token"]);
    assert_eq!(text.trim(), "inactive");

    // The private keys are in one 0600 file.
    let mode = std::fs::metadata(d.join("jwt-keys.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `tokenledger serve` on a data dir, killed on drop.
/// Fields drop in order: the server is killed before its NATS stops.
struct Serving {
    _child: Reaped,
    url: String,
    _nats: ledger_testkit::NatsServer,
}

fn over_nats(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args([
            "--nats",
            url,
            "--workspace",
            "acme",
            "--actor",
            "user:dave",
            "--json",
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn nats_json(url: &str, args: &[&str]) -> Value {
    let (code, stdout, stderr) = over_nats(url, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn keys_and_verify_over_nats_while_serving() {
    let nats = ledger_testkit::NatsServer::start().expect("nats-server");
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args(["serve", "--nats", &nats.url()])
        .env_remove("TOKENLEDGER_NATS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let s = Serving {
        _child: Reaped::new(child),
        url: nats.url(),
        _nats: nats,
    };
    assert!(
        ledger_testkit::wait_for(std::time::Duration::from_secs(60), || over_nats(
            &s.url,
            &["keys", "list"]
        )
        .0 == 0),
        "the server never answered"
    );
    let old = nats_json(&s.url, &["issue"])["token"]["tokenStr"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = nats_json(&s.url, &["keys", "rotate"]);
    assert_eq!(rotated["event"]["actor"]["agentId"], "dave");
    let new_kid = rotated["event"]["kid"].as_str().unwrap().to_owned();
    let fresh = nats_json(&s.url, &["issue"])["token"]["tokenStr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(kid_of(&fresh), new_kid);
    assert_eq!(nats_json(&s.url, &["verify", &old])["active"], true);
    assert_eq!(nats_json(&s.url, &["verify", &fresh])["active"], true);
    assert_eq!(
        nats_json(&s.url, &["verify", "forged.token.here"]),
        serde_json::json!({"active": false})
    );
    assert_eq!(
        nats_json(&s.url, &["keys", "jwks"])["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let history = nats_json(&s.url, &["keys", "history"]);
    assert_eq!(history["history"].as_array().unwrap().len(), 2);
    // The data dir is held by the server: rotating it directly is refused (locked, exit 4).
    let (code, _, _) = run(data.path(), &["keys", "rotate"]);
    assert_eq!(code, 4);
}
