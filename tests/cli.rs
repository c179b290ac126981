//! CLI integration tests: the real `tokenledger` binary on a temporary data dir.
//!
//! Each test runs the binary as a user would and checks its stdout (parsed
//! when `--json`), stderr and exit code. Nothing waits by sleeping: a test
//! that needs another process to reach a state waits for that process to say
//! so, with a deadline.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{Reaped, Run, BIN};
const WS: &str = "acme";
const PRIMAERP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/primaerp-access-token.json"
);
const FIMIDARA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/fimidara-client-token.json"
);

/// How long a child process may take to reach a state the test waits for.
const DEADLINE: Duration = Duration::from_secs(60);

/// A data dir and the flags that point the binary at it.
struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with a clean environment, this data dir, workspace and actor.
    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        for var in [
            "TOKENLEDGER_DATA_DIR",
            "TOKENLEDGER_WORKSPACE",
            "TOKENLEDGER_NATS",
            "TOKENLEDGER_ACCESS_TOKEN",
            "TOKENLEDGER_REFRESH_TOKEN",
            "TOKENLEDGER_SNAPSHOT_MIN_EVENTS",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        c.arg("--data-dir")
            .arg(self.data_dir())
            .args(["--workspace", WS, "--actor", "user:tester"])
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().expect("run tokenledger"))
    }

    /// Runs with `--json` and expects success.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all).json()
    }

    /// Runs with `--json` and expects a failure with `exit`.
    fn fails(&self, exit: i32, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        assert_eq!(
            run.code, exit,
            "stderr: {}\nstdout: {}",
            run.stderr, run.stdout
        );
        assert!(
            run.stdout.is_empty(),
            "nothing on stdout on failure: {}",
            run.stdout
        );
        run.error()
    }

    fn issue(&self, name: &str) -> String {
        let v = self.json(&["issue", "--name", name]);
        v["token"]["resourceId"]
            .as_str()
            .expect("resourceId")
            .to_owned()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| {
            v["resourceId"]
                .as_str()
                .or(v["id"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn event_types(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn quick_start_flow() {
    let cli = Cli::new();
    let issued = cli.json(&[
        "issue",
        "--name",
        "CI Deploy",
        "--group",
        "readers",
        "--group",
        "writers",
        "--expires",
        "+30d",
    ]);
    let token = &issued["token"];
    let id = token["resourceId"].as_str().unwrap().to_owned();
    assert_eq!(token["kind"], "client");
    assert_eq!(token["name"], "CI Deploy");
    assert_eq!(token["version"], 1);
    assert_eq!(token["permissionGroups"].as_array().unwrap().len(), 2);
    assert_eq!(
        token["permissionGroups"][0]["assignedBy"]["agentId"],
        "tester"
    );
    assert!(
        token["tokenStr"].as_str().unwrap().split('.').count() == 3,
        "a JWT"
    );
    assert_eq!(issued["positions"], serde_json::json!([1]));

    let list = cli.json(&["list"]);
    assert_eq!(ids(&list), vec![id.clone()]);
    assert!(list["nextCursor"].is_null());
    assert!(
        list["items"][0].get("tokenStr").is_none(),
        "lists never show token strings"
    );

    let trashed = cli.json(&["trash", &id, "--reason", "laptop lost"]);
    assert_eq!(trashed["token"]["version"], 2);
    assert_eq!(trashed["token"]["trashItem"]["reason"], "laptop lost");
    assert!(
        ids(&cli.json(&["list"])).is_empty(),
        "trashed tokens are hidden by default"
    );
    assert_eq!(
        ids(&cli.json(&["list", "--trashed", "only"])),
        vec![id.clone()]
    );
    assert_eq!(
        ids(&cli.json(&["list", "--trashed", "include"])),
        vec![id.clone()]
    );

    let restored = cli.json(&["restore", &id]);
    assert_eq!(restored["token"]["version"], 3);
    assert!(restored["token"].get("trashItem").is_none());
    assert_eq!(ids(&cli.json(&["list"])), vec![id.clone()]);

    // Names are case-insensitive.
    let got = cli.json(&["get", "--name", "ci deploy"]);
    assert_eq!(got["token"]["resourceId"], id.as_str());
    assert!(got["token"].get("tokenStr").is_none(), "only on request");

    let history = cli.json(&["history", &id]);
    assert_eq!(
        event_types(&history),
        ["client_token_issued", "token_trashed", "token_restored"]
    );
    let versions: Vec<u64> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert!(history["events"][0]["hash"].is_string());

    // The human forms say the same.
    let human = cli.run(&["list"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains(&id) && human.stdout.contains("active"));
    assert!(human.stdout.contains("CI Deploy"));
    let human = cli.run(&["list", "--trashed", "include"]);
    assert!(human.stdout.lines().next().unwrap().contains("STATE"));
    let human = cli.run(&["history", &id]);
    assert!(human.stdout.contains("token_trashed") && human.stdout.contains("user:tester"));
    // What each event changed, as `watch` says it: the trash's reason too.
    assert!(human.stdout.contains("CHANGE"), "{}", human.stdout);
    assert!(human.stdout.contains("laptop lost"), "{}", human.stdout);
    let human = cli.run(&["get", &id]);
    assert!(human.stdout.contains("CI Deploy") && human.stdout.contains("readers, writers"));
    // The string's own id and expiry, which an update does not move.
    let view = cli.json(&["get", &id]);
    assert!(
        human
            .stdout
            .contains(view["token"]["jwt"]["jti"].as_str().unwrap()),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("string expires"), "{}", human.stdout);
    let human = cli.run(&["trash", &id]);
    assert!(
        human.stdout.starts_with("trashed client token"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("trashed 20"), "{}", human.stdout);
}

#[test]
fn client_token_commands_and_queries() {
    let cli = Cli::new();
    let id = cli.issue("svc");

    let v = cli.json(&[
        "update",
        &id,
        "--name",
        "svc-renamed",
        "--groups",
        "a,b",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(v["token"]["name"], "svc-renamed");
    assert_eq!(v["token"]["expires"], 4_070_908_800_000i64);
    assert_eq!(v["token"]["permissionGroups"].as_array().unwrap().len(), 2);
    let v = cli.json(&["update", &id, "--clear-name", "--clear-expires"]);
    assert!(v["token"].get("name").is_none() && v["token"].get("expires").is_none());

    let v = cli.json(&["assign", &id, "--group", "c"]);
    assert_eq!(v["token"]["permissionGroups"].as_array().unwrap().len(), 3);
    let v = cli.json(&["unassign", &id, "--group", "a", "--group", "b"]);
    let groups: Vec<&str> = v["token"]["permissionGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["permissionGroupId"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["c"]);
    let v = cli.json(&["update", &id, "--groups", ""]);
    assert_eq!(v["token"]["permissionGroups"], json!([]), "'' is none: {v}");
    cli.json(&["assign", &id, "--group", "c"]);

    // Rotation mints a new string; `get --show-token-str` re-mints the current one.
    let before = cli.json(&["get", &id, "--show-token-str"])["token"]["tokenStr"].clone();
    let rotated = cli.json(&["rotate", &id]);
    let after = rotated["token"]["tokenStr"].clone();
    assert!(after.is_string());
    assert_ne!(before, after);
    assert_eq!(
        cli.json(&["get", &id, "--show-token-str"])["token"]["tokenStr"],
        after
    );

    // Time travel.
    let v1 = cli.json(&["get", &id, "--as-of-version", "1"]);
    assert_eq!(v1["token"]["name"], "svc");
    assert_eq!(v1["token"]["version"], 1);
    let p2 = cli.json(&["get", &id, "--as-of-position", "2"]);
    assert_eq!(p2["token"]["name"], "svc-renamed");
    // A name names the token that holds it now: "svc" was renamed away.
    let e = cli.fails(1, &["get", "--name", "svc", "--as-of-version", "1"]);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("not_found"), Some("name"))
    );
    assert!(
        e["message"].as_str().unwrap().contains("holds it now"),
        "{e}"
    );
    let history = cli.json(&["history", &id]);
    let first_at = history["events"][0]["occurredAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let t1 = cli.json(&["get", &id, "--as-of-time", &first_at]);
    assert_eq!(t1["token"]["name"], "svc");
    assert_eq!(t1["token"]["version"], 1);
    let e = cli.fails(1, &["get", &id, "--as-of-time", "2001-01-01T00:00:00Z"]);
    assert_eq!(e["code"], "not_found", "before its creation");
    // `expired` is as at that time, not as now (as over NATS and in replay).
    let soon = cli.json(&["issue", "--name", "expires-tomorrow", "--expires", "+1d"]);
    let soon_id = soon["token"]["resourceId"].as_str().unwrap().to_owned();
    // Its name has a holder now, which did not exist then.
    let e = cli.fails(
        1,
        &[
            "get",
            "--name",
            "expires-tomorrow",
            "--as-of-time",
            "2001-01-01T00:00:00Z",
        ],
    );
    assert!(
        e["message"].as_str().unwrap().contains("at that point"),
        "{e}"
    );
    let then = cli.json(&["get", &soon_id, "--as-of-time", "2999-01-01T00:00:00Z"]);
    assert_eq!(then["token"]["expired"], true, "{then}");
    assert_eq!(cli.json(&["get", &soon_id])["token"]["expired"], false);
    let e = cli.fails(2, &["get", &id, "--as-of-time", "last tuesday"]);
    assert_eq!(e["field"], "asOf.time");

    // Provided ids: reuse by default, refuse with --if-exists fail.
    let a = cli.json(&["issue", "--provided-id", "user-7"]);
    let b = cli.json(&["issue", "--provided-id", "user-7"]);
    assert_eq!(a["token"]["resourceId"], b["token"]["resourceId"]);
    assert_eq!(b["positions"], serde_json::json!([]));
    let e = cli.fails(
        1,
        &["issue", "--provided-id", "user-7", "--if-exists", "fail"],
    );
    assert_eq!(e["code"], "provided_id_taken");
    let got = cli.json(&["get", "--provided-id", "user-7"]);
    assert_eq!(got["token"]["resourceId"], a["token"]["resourceId"]);

    // The same commandId twice: the first answer again, nothing appended.
    let cmd_id = "0b6f3c1e-8a4d-4e2b-9c7f-1d2e3f4a5b6c";
    let first = cli.json(&["revoke", &id, "--reason", "leaked", "--command-id", cmd_id]);
    let again = cli.json(&["revoke", &id, "--reason", "leaked", "--command-id", cmd_id]);
    assert_eq!(first["positions"], again["positions"]);
    assert_eq!(first["token"]["version"], again["token"]["version"]);
    assert_eq!(first["token"]["revoked"], true);
    let listed = cli.json(&["list", "--revoked", "true"]);
    assert_eq!(ids(&listed), vec![id.clone()]);
    let e = cli.fails(1, &["rotate", &id]);
    assert_eq!(e["code"], "revoked");
    // Its current string is a reveal, refused for a revoked token as over
    // NATS; an earlier version's is still re-minted for an investigation.
    let e = cli.fails(1, &["get", &id, "--show-token-str"]);
    assert_eq!(e["code"], "revoked", "{e}");
    let then = cli.json(&["get", &id, "--as-of-version", "1", "--show-token-str"]);
    assert!(then["token"]["tokenStr"].is_string(), "{then}");
    let human = cli.run(&["get", &id]);
    assert!(human.stdout.contains("revoked"), "{}", human.stdout);

    // Purge: gone from views, kept in history.
    let purged = cli.json(&["purge", &id, "--force"]);
    assert!(purged["token"].is_null());
    let e = cli.fails(1, &["get", &id]);
    assert_eq!(e["code"], "not_found");
    let history = cli.json(&["history", &id]);
    assert_eq!(event_types(&history).last().unwrap(), "token_purged");
    // Its string is gone with it: an earlier version still shows (history),
    // but is never re-minted.
    let old = cli.json(&["get", &id, "--as-of-version", "1", "--show-token-str"]);
    assert_eq!(old["token"]["name"], "svc");
    assert!(old["token"]["tokenStr"].is_null(), "{old}");
    // The name is free again.
    cli.issue("svc");
}

#[test]
fn access_tokens_keep_secrets_out_of_output() {
    let cli = Cli::new();
    let secret = "ya29.a0AfH6SMBx-very-secret";
    let refresh = "1//0g-refresh-secret";
    let secret_file = cli.data_dir().join("access.txt");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let refresh_file = cli.data_dir().join("refresh.txt");
    std::fs::write(&refresh_file, refresh).unwrap();
    let user = "71c84cd2-91ac-4e6b-a74e-393c87d5f97d";

    let out = cli
        .command()
        .args(["--json", "register", "--user", user, "--provider", "google"])
        .args(["--account", "jsmith@gmail.com", "--access-token-file"])
        .arg(&secret_file)
        .arg("--refresh-token-file")
        .arg(&refresh_file)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let run = Run::from(out);
    let v = run.json();
    assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    assert!(!run.stdout.contains(refresh) && !run.stderr.contains(refresh));
    let id = v["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["token"]["kind"], "access");
    assert_eq!(v["token"]["displayName"], "jsmith@gmail.com");
    assert!(v["token"]["accessTokenFingerprint"].is_string());
    assert!(v["token"]["refreshTokenFingerprint"].is_string());

    // A second live token for the same user, provider and account is refused.
    let e = {
        let out = cli
            .command()
            .args(["--json", "register", "--user", user, "--provider", "google"])
            .args(["--account", "jsmith@gmail.com"])
            .env("TOKENLEDGER_ACCESS_TOKEN", "other")
            .output()
            .unwrap();
        let run = Run::from(out);
        assert_eq!(run.code, 1, "{}", run.stderr);
        run.error()
    };
    assert_eq!(e["code"], "account_taken");

    // Without any source of the secret: invalid input naming the field.
    let e = cli.fails(
        2,
        &[
            "register",
            "--user",
            user,
            "--provider",
            "x",
            "--account",
            "y",
        ],
    );
    assert_eq!(e["field"], "accessToken");

    // Refresh from stdin.
    let mut child = cli
        .command()
        .args(["--json", "refresh", &id, "--access-token-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"new-access-secret\n")
        .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    let v = run.json();
    assert!(!run.stdout.contains("new-access-secret"));
    assert_eq!(v["token"]["version"], 2);

    let v = cli.json(&["update-access", &id, "--account", "john@example.com"]);
    assert_eq!(v["token"]["accountName"], "john@example.com");
    let list = cli.json(&[
        "list",
        "--kind",
        "access",
        "--user",
        user,
        "--provider",
        "google",
    ]);
    assert_eq!(ids(&list), vec![id.clone()]);
    assert!(ids(&cli.json(&["list", "--kind", "client"])).is_empty());
    let human = cli.run(&["get", &id]);
    assert!(human.stdout.contains("john@example.com") && !human.stdout.contains(secret));

    // Only an explicit --reveal shows them: the current access token (the
    // refresh above), and the refresh token it kept.
    let v = cli.json(&["get", &id, "--reveal"]);
    assert_eq!(
        (
            v["token"]["accessToken"].as_str(),
            v["token"]["refreshToken"].as_str()
        ),
        (Some("new-access-secret"), Some(refresh))
    );
    assert_eq!(v["token"]["version"], 3);
    let human = cli.run(&["get", &id, "--reveal"]);
    assert!(human.stdout.contains("new-access-secret") && human.stdout.contains(refresh));
    let e = cli.fails(2, &["get", &id, "--reveal", "--actor", "nobody"]);
    assert_eq!(e["field"], "actor");
}

#[test]
fn exit_codes() {
    let cli = Cli::new();
    let id = cli.issue("one");

    // 1: rules.
    let e = cli.fails(1, &["issue", "--name", "ONE"]);
    assert_eq!(e["code"], "name_taken");
    assert_eq!(e["field"], "name");
    let e = cli.fails(1, &["trash", &id, "--expected-version", "7"]);
    assert_eq!(e["code"], "conflict");
    assert_eq!(e["currentVersion"], 1);
    let e = cli.fails(1, &["restore", &id]);
    assert_eq!(e["code"], "not_trashed");
    let e = cli.fails(1, &["get", "--name", "nobody"]);
    assert_eq!(e["code"], "not_found");
    let e = cli.fails(1, &["history", "5d6b1a0e-3c2f-4b8e-9a7d-2f1e0c4b6a91"]);
    assert_eq!(e["code"], "not_found");
    let other_ws = Run::from(
        cli.command()
            .args(["--json", "--workspace", "other", "get", &id])
            .output()
            .unwrap(),
    );
    assert_eq!(other_ws.code, 1, "another workspace's token is not found");

    // The human error line.
    let run = cli.run(&["issue", "--name", "one"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("error: name_taken: ")
            && run.stderr.trim_end().ends_with("(field name)"),
        "{}",
        run.stderr
    );

    // 2: invalid input, named by field, exactly as on the wire.
    let e = cli.fails(2, &["issue", "--body", r#"{"name": 5}"#]);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("invalid_input"), Some("name"))
    );
    let e = cli.fails(2, &["issue", "--body", r#"{"colour": "red"}"#]);
    assert_eq!(e["field"], "colour");
    assert!(e["message"].as_str().unwrap().contains("unknown field"));
    let e = cli.fails(2, &["issue", "--body", r#"{"tokenStr": "eyJ..."}"#]);
    assert_eq!(e["field"], "tokenStr");
    assert!(e["message"].as_str().unwrap().contains("read-only"));
    let e = cli.fails(2, &["issue", "--body", "{not json"]);
    assert_eq!(e["field"], "body");
    // Flags clap refuses answer in the same JSON with --json, the flag as field.
    let e = cli.fails(
        2,
        &["update", &id, "--expected-version", "18446744073709551616"],
    );
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("invalid_input"), Some("expected-version")),
        "{e}"
    );
    let e = cli.fails(2, &["audit", "export", "--from", "abc"]);
    assert_eq!(e["field"], "from", "{e}");
    // A period that would overflow the clock is refused before serving.
    let e = cli.fails(
        2,
        &[
            "serve",
            "--nats",
            "nats://127.0.0.1:1",
            "--checkpoint-every-secs",
            "18446744073709551615",
        ],
    );
    assert_eq!(e["field"], "checkpoint-every-secs", "{e}");
    let e = cli.fails(2, &["list", "--no-such-flag"]);
    assert_eq!(e["code"], "invalid_input", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("--no-such-flag"),
        "{e}"
    );
    // A group without its subcommand is a usage error in JSON too.
    let e = cli.fails(2, &["keys"]);
    assert_eq!(e["code"], "invalid_input", "{e}");
    // An argument that is not UTF-8: a usage error, not a crash.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let run = Run::from(
            cli.command()
                .args(["--json", "issue", "--name"])
                .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(run.error()["code"], "invalid_input", "{}", run.stderr);
    }
    // A provider secret is never taken from argv, in a body either; the
    // refusal does not repeat it.
    let user = uuid::Uuid::new_v4().to_string();
    for field in ["accessToken", "refreshToken"] {
        let body = json!({"user": {"id": user}, "provider": "google", "accountName": "a",
                          field: "argv-secret-77"});
        let e = cli.fails(2, &["register", "--body", &body.to_string()]);
        assert_eq!(e["field"], field, "{e}");
        assert!(!e.to_string().contains("argv-secret-77"), "{e}");
    }
    let e = cli.fails(2, &["trash", "NOT-A-UUID"]);
    assert_eq!(e["field"], "tokenId");
    let e = cli.fails(2, &["get", "C2FB2DBE-39EB-421A-B07C-5A14671FBBB5"]);
    assert_eq!(e["field"], "tokenId");
    let e = cli.fails(2, &["issue", "--expires", "soonish"]);
    assert_eq!(e["field"], "expires");
    let e = cli.fails(2, &["issue", "--name", "x", "--expires", "1000"]);
    assert_eq!(e["field"], "expires", "in the past: {e}");
    let e = cli.fails(2, &["update", &id]);
    assert_eq!(e["field"], "body", "nothing to update");
    let e = cli.fails(2, &["--workspace", "a.b", "list"]);
    assert_eq!(e["field"], "workspaceId");
    let e = cli.fails(2, &["--actor", "robot:x", "issue"]);
    assert_eq!(e["field"], "actor.agentType");
    let e = cli.fails(2, &["issue", "--command-id", "nope"]);
    assert_eq!(e["field"], "commandId");
    // A body gets workspace, command id, actor and token id filled in.
    let v = cli.json(&["trash", &id, "--body", r#"{"reason": "from a body"}"#]);
    assert_eq!(v["token"]["trashItem"]["reason"], "from a body");
    // A body that says otherwise than the command line is refused, naming
    // the field, and changes nothing: it never acts on another workspace
    // or another token than the one the command line names.
    let other = cli.json(&["--workspace", "other", "issue", "--name", "elsewhere"]);
    let other_id = other["token"]["resourceId"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"workspaceId": "other", "tokenId": "{other_id}"}}"#);
    let e = cli.fails(2, &["revoke", &other_id, "--body", &body]);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("invalid_input"), Some("workspaceId")),
        "{e}"
    );
    let body = format!(r#"{{"tokenId": "{other_id}"}}"#);
    let e = cli.fails(2, &["revoke", &id, "--body", &body]);
    assert_eq!(e["field"], "tokenId", "{e}");
    for (flag, value, field) in [
        (
            "--command-id",
            "6a3f1b4e-8a9b-4c5d-9e0f-112233445566",
            "commandId",
        ),
        ("--expected-version", "2", "expectedVersion"),
    ] {
        let body = format!(
            r#"{{"{field}": {}}}"#,
            if field == "commandId" {
                r#""0b2c7c9e-3f7d-4a8e-9a51-1c2d3e4f5a6b""#
            } else {
                "1"
            }
        );
        let e = cli.fails(2, &["revoke", &id, flag, value, "--body", &body]);
        assert_eq!(e["field"], field, "{e}");
    }
    let e = cli.fails(
        2,
        &[
            "revoke",
            &id,
            "--body",
            r#"{"actor": {"agentId": "mallory", "agentType": "user"}}"#,
        ],
    );
    assert_eq!(e["field"], "actor", "{e}");
    let still = cli.json(&["--workspace", "other", "get", &other_id]);
    assert_eq!(still["token"]["revoked"], false, "{still}");
    // TOKENLEDGER_WORKSPACE is only a default: a body may name another.
    let run = Run::from(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(cli.data_dir())
            .args(["--actor", "user:tester", "--json", "trash", &other_id])
            .args(["--body", r#"{"workspaceId": "other"}"#])
            .env("TOKENLEDGER_WORKSPACE", WS)
            .env_remove("TOKENLEDGER_NATS")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json()["token"]["trashItem"].is_object());
    let still = cli.json(&["get", &id]);
    assert_eq!(still["token"]["revoked"], false, "{still}");
    // An empty group id is refused, not dropped; `update --groups ''` is "none".
    let e = cli.fails(2, &["issue", "--name", "g", "--group", ""]);
    assert_eq!(e["field"], "permissionGroups[0].permissionGroupId", "{e}");
    let e = cli.fails(2, &["assign", &id, "--group", ""]);
    assert_eq!(e["field"], "permissionGroups[0].permissionGroupId", "{e}");
    // Query rejections name their field too.
    let e = cli.fails(1, &["get", "0b2c7c9e-3f7d-4a8e-9a51-1c2d3e4f5a6b"]);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("not_found"), Some("tokenId"))
    );
    let e = cli.fails(1, &["get", "--name", "nobody"]);
    assert_eq!(e["field"], "name", "{e}");
    let e = cli.fails(1, &["get", "--provided-id", "nobody"]);
    assert_eq!(e["field"], "providedResourceId", "{e}");
    let e = cli.fails(1, &["history", "0b2c7c9e-3f7d-4a8e-9a51-1c2d3e4f5a6b"]);
    assert_eq!(e["field"], "tokenId", "{e}");
    let e = cli.fails(2, &["get", &id, "--as-of-version", "0"]);
    assert_eq!(e["field"], "asOf.version", "{e}");
    let e = cli.fails(2, &["get", &id, "--as-of-position", "0"]);
    assert_eq!(e["field"], "asOf.position", "{e}");
    let e = cli.fails(2, &["list", "--cursor", ""]);
    assert_eq!(e["field"], "cursor", "{e}");
    assert!(e["message"].as_str().unwrap().contains("empty"), "{e}");
    // The same values twice are fine.
    let body = format!(r#"{{"workspaceId": "{WS}", "tokenId": "{id}", "reason": "agreed"}}"#);
    cli.json(&["revoke", &id, "--body", &body]);
    // Missing workspace, and clap's own usage errors.
    let run = Run::from(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(cli.data_dir())
            .args(["list"])
            .env_remove("TOKENLEDGER_WORKSPACE")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--workspace"), "{}", run.stderr);
    assert_eq!(cli.run(&["issue", "--frobnicate"]).code, 2);
    assert_eq!(cli.run(&["issue", "--name", "x", "--body", "{}"]).code, 2);
    assert_eq!(cli.run(&["get"]).code, 2);

    // 3: the ledger cannot work (here: the data dir is a file).
    let file = cli.data_dir().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = Run::from(
        cli.command()
            .arg("--data-dir")
            .arg(&file)
            .args(["--json", "list"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.error()["code"], "unavailable");

    // --help documents the codes.
    let help = cli.run(&["--help"]);
    assert_eq!(help.code, 0);
    for line in ["Exit codes:", "  1  ", "  2  ", "  3  ", "  4  "] {
        assert!(help.stdout.contains(line), "{line:?} missing from --help");
    }
}

#[test]
fn imports_both_seed_formats() {
    let cli = Cli::new();

    let v = cli.json(&["import", PRIMAERP]);
    let t = &v["token"];
    assert_eq!(t["id"], "c2fb2dbe-39eb-421a-b07c-5a14671fbbb5");
    assert_eq!(t["kind"], "access");
    assert_eq!(t["user"]["id"], "71c84cd2-91ac-4e6b-a74e-393c87d5f97d");
    assert_eq!(t["provider"], "google");
    assert_eq!(t["accountName"], "jsmith@gmail.com");
    assert_eq!(t["displayName"], "jsmith@gmail.com");
    assert_eq!(t["import"]["source"], "primaerp");
    assert_eq!(t["import"]["createdAt"], "2017-03-13T06:19:13.498Z");
    assert_eq!(t["import"]["updatedAt"], "2017-03-13T15:53:13.498Z");
    assert_eq!(t["import"]["sourceVersion"], 3);
    // The view shows the record's times as it is, until the ledger changes it.
    assert_eq!(t["createdAt"], "2017-03-13T06:19:13.498Z");
    assert_eq!(t["updatedAt"], "2017-03-13T15:53:13.498Z");
    assert_eq!(t["version"], 1, "the ledger's own version starts at 1");
    assert!(t["refreshTokenFingerprint"].is_string());
    let text = v.to_string();
    assert!(!text.contains("8974987412978974984") && !text.contains("blX09ao39021das92394"));

    // A file that starts with a byte order mark imports the same.
    let bom = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend(std::fs::read(PRIMAERP).unwrap());
    std::fs::write(bom.path(), bytes).unwrap();
    let fresh = Cli::new();
    let b = fresh.json(&["import", bom.path().to_str().unwrap()]);
    assert_eq!(b["token"]["id"], t["id"]);

    // Importing it again is the same import: answered, nothing appended.
    let again = cli.json(&["import", PRIMAERP]);
    assert_eq!(again["positions"], v["positions"]);
    // Another record under the same id: the id exists.
    let mut changed: Value =
        serde_json::from_str(&std::fs::read_to_string(PRIMAERP).unwrap()).unwrap();
    changed["accountName"] = "someone-else@gmail.com".into();
    let changed_path = cli.data_dir().join("changed.json");
    std::fs::write(&changed_path, changed.to_string()).unwrap();
    let e = cli.fails(1, &["import", changed_path.to_str().unwrap()]);
    assert_eq!(e["code"], "conflict");
    assert_eq!(e["field"], "id");

    let v = cli.json(&["import", FIMIDARA, "--format", "fimidara"]);
    let t = &v["token"];
    let record: Value = serde_json::from_str(&std::fs::read_to_string(FIMIDARA).unwrap()).unwrap();
    assert_eq!(t["resourceId"], record["resourceId"]);
    assert_eq!(t["workspaceId"], WS);
    assert_eq!(t["name"], record["name"]);
    assert_eq!(t["providedResourceId"], record["providedResourceId"]);
    assert_eq!(t["issuedAt"], record["issuedAt"]);
    assert_eq!(t["expires"], record["expires"]);
    assert_eq!(
        t["permissionGroups"][1]["permissionGroupId"],
        "pmgroup_uploaders"
    );
    assert_eq!(
        t["permissionGroups"][1]["assignedAt"],
        "2023-04-02T16:05:11.002Z"
    );
    assert_eq!(
        t["permissionGroups"][1]["assignedBy"]["agentType"],
        "service"
    );
    assert_eq!(t["import"]["source"], "fimidara");
    assert_eq!(
        t["import"]["createdBy"]["agentId"],
        "user_01H8Z9A2B3C4D5E6F7G8H9J0K1"
    );
    assert_eq!(t["import"]["sourceVersion"], 3);
    assert!(t["tokenStr"].is_string());
    assert_ne!(
        t["tokenStr"], record["tokenStr"],
        "the ledger mints its own string"
    );
    let notes = v["notes"].to_string();
    assert!(notes.contains("tokenStr ignored"), "{notes}");
    let got = cli.json(&["get", "--provided-id", "user_01H8ZQ4K7M2N9P3R5T6V8W0X1Y"]);
    assert_eq!(got["token"]["resourceId"], record["resourceId"]);
    assert_eq!(ids(&cli.json(&["list"])).len(), 2);

    // The human form of the answer to the same import again says the
    // string was not kept.
    let again = cli.run(&["import", FIMIDARA]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("tokenStr"), "{}", again.stdout);

    // An import keeps a past expiry: the token is listed as expired.
    let old = cli.data_dir().join("old.json");
    let mut expired = record.clone();
    expired["resourceId"] = "6e7c2b1f-4d3a-4c9f-8b8e-3a2f1d5c7b02".into();
    expired["name"] = "Old Kiosk".into();
    expired["providedResourceId"] = "kiosk-1".into();
    expired["expires"] = 1_600_000_000_000i64.into();
    std::fs::write(&old, expired.to_string()).unwrap();
    let v = cli.json(&["import", old.to_str().unwrap()]);
    assert_eq!(v["token"]["expired"], true);
    let listed = cli.json(&["list", "--expired", "true"]);
    assert_eq!(ids(&listed), vec!["6e7c2b1f-4d3a-4c9f-8b8e-3a2f1d5c7b02"]);
    assert!(cli.run(&["list"]).stdout.contains("expired"));

    // An import is validated like a command.
    let bad = cli.data_dir().join("bad.json");
    let mut record = record;
    record["resourceId"] = "5D6B1A0E-3C2F-4B8E-9A7D-2F1E0C4B6A91".into();
    std::fs::write(&bad, record.to_string()).unwrap();
    let e = cli.fails(2, &["import", bad.to_str().unwrap()]);
    assert_eq!(e["field"], "resourceId");
    record["resourceId"] = "0a6b1a0e-3c2f-4b8e-9a7d-2f1e0c4b6a91".into();
    record["workspaceId"] = "not a workspace".into();
    std::fs::write(&bad, record.to_string()).unwrap();
    let e = cli.fails(
        2,
        &[
            "--workspace",
            "not a workspace",
            "import",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(e["field"], "workspaceId");
    record["workspaceId"] = WS.into();
    record["name"] = "x".repeat(201).into();
    std::fs::write(&bad, record.to_string()).unwrap();
    let e = cli.fails(2, &["import", bad.to_str().unwrap()]);
    assert_eq!(e["field"], "name");
}

#[test]
fn human_import_mentions_the_ignored_token_string() {
    let cli = Cli::new();
    let run = cli.run(&["import", FIMIDARA]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("note: tokenStr ignored"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("imported"), "{}", run.stdout);
}

/// Reads a child's stdout lines on a thread, so the test can wait with a deadline.
/// The header line of a data dir's state snapshot.
fn snapshot_header(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("state.snapshot")).expect("a snapshot");
    serde_json::from_str(text.lines().next().expect("a header")).expect("JSON header")
}

#[test]
fn a_clean_stop_leaves_a_state_snapshot_that_the_next_command_starts_from() {
    let cli = Cli::new();
    let snapshot = cli.data_dir().join("state.snapshot");
    // Below the default threshold (10k events) a small ledger keeps none.
    cli.issue("first");
    assert!(!snapshot.exists());

    let run = Run::from(
        cli.command()
            .args([
                "--snapshot-min-events",
                "0",
                "--json",
                "issue",
                "--name",
                "second",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(snapshot_header(cli.data_dir())["position"], 2);

    // The next command opens from it (it says so at info level), and
    // decides on that state: the names taken before it still are.
    let run = Run::from(
        cli.command()
            .env("TOKENLEDGER_SNAPSHOT_MIN_EVENTS", "0")
            .env("RUST_LOG", "info")
            .args(["--json", "issue", "--name", "FIRST"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "a rule refused it: {}", run.stderr);
    assert!(
        run.stderr.contains("state recovered from the snapshot"),
        "{}",
        run.stderr
    );
    let code = serde_json::from_str::<Value>(run.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(code["error"]["code"], "name_taken");
    // A rejection appended nothing, so the snapshot stands.
    assert_eq!(snapshot_header(cli.data_dir())["position"], 2);
    // And appends after it, gap-free.
    let third = cli.json(&["issue", "--name", "third"]);
    assert_eq!(third["positions"], serde_json::json!([3]));
}

fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_second_process_on_a_held_data_dir_exits_4() {
    let cli = Cli::new();
    let mut holder = Reaped::new(
        cli.command()
            .args(["debug-load", "--count", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn debug-load"),
    );
    let lines = lines_of(&mut holder);
    // Its first acknowledged command proves it holds the data dir.
    let first = lines
        .recv_timeout(DEADLINE)
        .expect("debug-load acknowledged a command");
    let ack: Value = serde_json::from_str(&first).unwrap();
    assert!(ack["commandId"].is_string() && ack["tokenId"].is_string());

    let run = cli.run(&["list"]);
    assert_eq!(run.code, 4, "stderr: {}", run.stderr);
    assert!(run.stderr.starts_with("error: locked: "), "{}", run.stderr);
    assert!(
        run.stderr.contains("in use by another tokenledger process"),
        "{}",
        run.stderr
    );
    let e = cli.fails(4, &["issue", "--name", "blocked"]);
    assert_eq!(e["code"], "locked");

    drop(holder);
    // Once the holder is gone the data dir opens, with what it acknowledged.
    let list = cli.json(&["list", "--limit", "1"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[test]
fn debug_load_prints_one_line_per_acknowledged_command() {
    let cli = Cli::new();
    let run = cli.run(&["debug-load", "--writers", "3", "--count", "10"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let acks: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(acks.len(), 10);
    let mut positions: Vec<u64> = acks
        .iter()
        .map(|a| {
            assert_eq!(a["positions"].as_array().unwrap().len(), 1);
            a["positions"][0].as_u64().unwrap()
        })
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=10).collect::<Vec<_>>());
    let list = cli.json(&["list"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 10);
}

/// A reader that stops reading (`tokenledger get X | head -1`) is no error:
/// the work is done, so the exit is 0 and nothing is said on stderr.
#[test]
fn a_closed_stdout_is_not_a_failure() {
    let cli = Cli::new();
    let id = cli.issue("piped");
    let (reader, writer) = std::io::pipe().unwrap();
    // Closed before the process starts: its first write fails with EPIPE.
    drop(reader);
    let out = cli
        .command()
        .args(["get", &id])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// Moving `expires` later leaves the string capped by its signed `exp`: the
/// update says so, and after a rotation the string lasts until the new expiry.
#[test]
fn an_update_that_outlives_the_string_says_to_rotate() {
    let cli = Cli::new();
    let id = cli.json(&["issue", "--name", "lasting", "--expires", "+1d"])["token"]["resourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = cli.json(&["update", &id, "--expires", "+30d"]);
    let notes = v["notes"].as_array().expect("a note");
    assert!(notes[0].as_str().unwrap().contains("rotate"), "{notes:?}");
    let human = cli.run(&["update", &id, "--expires", "+31d"]);
    assert!(
        human.stdout.contains("note: its current token string"),
        "{}",
        human.stdout
    );
    let rotated = cli.json(&["rotate", &id]);
    let exp = rotated["token"]["jwt"]["exp"].as_i64().unwrap();
    let expires = rotated["token"]["expires"].as_i64().unwrap();
    assert!(
        (0..1000).contains(&(exp * 1000 - expires)),
        "exp {exp}, expires {expires}"
    );
    let v = cli.json(&["update", &id, "--name", "lasting-2"]);
    assert!(v.get("notes").is_none(), "{v}");
}

/// An import retried with its `--command-id` is answered as the first run,
/// even for a primaERP record without an id (the token id is derived from
/// the command id); another record under the same id is refused.
#[test]
fn an_import_retried_with_its_command_id_is_answered_and_another_record_is_refused() {
    let cli = Cli::new();
    let mut record: Value =
        serde_json::from_str(&std::fs::read_to_string(PRIMAERP).unwrap()).unwrap();
    record.as_object_mut().unwrap().remove("id");
    let no_id = cli.data_dir().join("no-id.json");
    std::fs::create_dir_all(cli.data_dir()).unwrap();
    std::fs::write(&no_id, record.to_string()).unwrap();
    let path = no_id.to_str().unwrap();
    let cmd_id = "5d1f8e2a-3c4b-4d6e-8f7a-9b0c1d2e3f4a";
    let first = cli.json(&["import", path, "--command-id", cmd_id]);
    let again = cli.json(&["import", path, "--command-id", cmd_id]);
    assert_eq!(first["token"]["id"], again["token"]["id"]);
    assert_eq!(first["positions"], again["positions"]);
    // Another id-less record (another account) under the same id: refused.
    record["accountName"] = "someone-else@gmail.com".into();
    let other_no_id = cli.data_dir().join("other-no-id.json");
    std::fs::write(&other_no_id, record.to_string()).unwrap();
    let e = cli.fails(
        2,
        &[
            "import",
            other_no_id.to_str().unwrap(),
            "--command-id",
            cmd_id,
        ],
    );
    assert_eq!(e["field"], "commandId");

    let cmd_id = "6e2f9a3b-4d5c-4e7f-9a8b-0c1d2e3f4a5b";
    let a = cli.json(&[
        "import",
        FIMIDARA,
        "--format",
        "fimidara",
        "--command-id",
        cmd_id,
    ]);
    let mut other: Value =
        serde_json::from_str(&std::fs::read_to_string(FIMIDARA).unwrap()).unwrap();
    other["resourceId"] = "0f5c1a2b-3d4e-4f6a-8b7c-9d0e1f2a3b4c".into();
    other["name"] = "another".into();
    other["providedResourceId"] = "another-user".into();
    let other_path = cli.data_dir().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let e = cli.fails(
        2,
        &[
            "import",
            other_path.to_str().unwrap(),
            "--format",
            "fimidara",
            "--command-id",
            cmd_id,
        ],
    );
    assert_eq!(e["field"], "commandId");
    assert!(a["token"]["resourceId"].is_string());
}

/// Dates an event could not hold, and a `trashItem` that is not primaERP's
/// object, are refused by field, and the data dir is unchanged and usable.
#[test]
fn an_import_with_an_impossible_date_or_trash_item_is_refused_and_changes_nothing() {
    let cli = Cli::new();
    std::fs::create_dir_all(cli.data_dir()).unwrap();
    let primaerp: Value =
        serde_json::from_str(&std::fs::read_to_string(PRIMAERP).unwrap()).unwrap();
    let fimidara: Value =
        serde_json::from_str(&std::fs::read_to_string(FIMIDARA).unwrap()).unwrap();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!("/Date(253402300800000)/"), "createdAt", "primaerp"),
        (json!("/Date(-62167219200001)/"), "createdAt", "primaerp"),
        (
            json!("/Date(9223372036854775807)/"),
            "updatedAt",
            "primaerp",
        ),
        (json!("2016-12-31T23:59:60.500Z"), "issuedAt", "fimidara"),
        (
            json!("9999-12-31T23:59:59.999-01:00"),
            "createdAt",
            "fimidara",
        ),
        (json!(false), "trashItem", "primaerp"),
        (json!("yes"), "trashItem", "primaerp"),
    ];
    for (i, (value, field, format)) in cases.into_iter().enumerate() {
        let mut record = if format == "primaerp" {
            primaerp.clone()
        } else {
            fimidara.clone()
        };
        record[field] = value.clone();
        let path = cli.data_dir().join(format!("bad-{i}.json"));
        std::fs::write(&path, record.to_string()).unwrap();
        let e = cli.fails(2, &["import", path.to_str().unwrap(), "--format", format]);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("invalid_input"), Some(field)),
            "{field} = {value}: {e}"
        );
    }
    // Nothing was appended, and the data dir still answers.
    let list = cli.json(&["list", "--trashed", "include"]);
    assert_eq!(list["items"], json!([]), "{list}");
    let v = cli.json(&["import", PRIMAERP]);
    assert_eq!(v["positions"], json!([1]), "{v}");
}

/// An import of a trashed record is two commands; a retry after a crash
/// between them finishes it (the trash's id is derived from the import's).
#[test]
fn an_import_retried_after_only_its_register_was_committed_trashes_the_token() {
    let cli = Cli::new();
    std::fs::create_dir_all(cli.data_dir()).unwrap();
    let mut record: Value =
        serde_json::from_str(&std::fs::read_to_string(PRIMAERP).unwrap()).unwrap();
    let cmd_id = "7f3a0b4c-5e6d-4f8a-8b9c-1d2e3f4a5b6c";
    // The state a crash after the register leaves: the token, not trashed.
    let path = cli.data_dir().join("record.json");
    std::fs::write(&path, record.to_string()).unwrap();
    let first = cli.json(&["import", path.to_str().unwrap(), "--command-id", cmd_id]);
    assert!(first["token"]["trashItem"].is_null(), "{first}");
    record["trashItem"] = json!({"type": "TrashItem"});
    std::fs::write(&path, record.to_string()).unwrap();
    let retried = cli.json(&["import", path.to_str().unwrap(), "--command-id", cmd_id]);
    assert!(retried["token"]["trashItem"].is_object(), "{retried}");
    assert_eq!(retried["positions"], json!([1, 2]), "{retried}");
    // Once both are done, another retry is answered by both, appending nothing.
    let again = cli.json(&["import", path.to_str().unwrap(), "--command-id", cmd_id]);
    assert_eq!(again["positions"], json!([1, 2]), "{again}");
    assert_eq!(again["token"]["version"], 2, "{again}");
    let history = cli.json(&["history", "c2fb2dbe-39eb-421a-b07c-5a14671fbbb5"]);
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
}

/// Without `--command-id`, running an import again (as after a crash between
/// its register and its trash) is answered by the first run, whatever the
/// order of the record's fields, and never appends twice.
#[test]
fn an_import_run_again_without_a_command_id_is_the_same_import() {
    let cli = Cli::new();
    std::fs::create_dir_all(cli.data_dir()).unwrap();
    let mut record: Value =
        serde_json::from_str(&std::fs::read_to_string(PRIMAERP).unwrap()).unwrap();
    record["trashItem"] = json!({"type": "TrashItem"});
    let path = cli.data_dir().join("record.json");
    std::fs::write(&path, record.to_string()).unwrap();
    let first = cli.json(&["import", path.to_str().unwrap()]);
    assert_eq!(first["positions"], json!([1, 2]), "{first}");
    // The same record, its fields in another order.
    let reordered = {
        let map = record.as_object().unwrap();
        let fields: Vec<String> = map
            .iter()
            .rev()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    std::fs::write(&path, reordered).unwrap();
    let again = cli.json(&["import", path.to_str().unwrap()]);
    assert_eq!(again["positions"], json!([1, 2]), "{again}");
    assert_eq!(again["token"]["id"], first["token"]["id"]);
    let history = cli.json(&["history", first["token"]["id"].as_str().unwrap()]);
    assert_eq!(history["events"].as_array().map(Vec::len), Some(2));
    // The commandId is in every event: it is no digest of the secret.
    let mut other_secret = record.clone();
    other_secret["accessToken"] = "another-secret-value".into();
    let command_ids: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["commandId"])
        .collect();
    assert!(command_ids[0].is_string(), "{history}");
    std::fs::write(&path, other_secret.to_string()).unwrap();
    let third = cli.json(&["import", path.to_str().unwrap()]);
    assert_eq!(
        third["positions"], first["positions"],
        "a record that differs only in its secret is the same import"
    );
}

#[test]
fn bench_measures_on_a_throwaway_data_dir() {
    let cli = Cli::new();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::from(
        cli.command()
            .env("TMPDIR", tmp.path())
            .args(["--json", "bench", "--commands", "40", "--writers", "1,3"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let rows = v["appends"].as_array().unwrap();
    let writers: Vec<u64> = rows
        .iter()
        .map(|r| r["writers"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, [1, 3]);
    for r in rows {
        assert_eq!(r["commands"], 40, "{r}");
        assert!(r["commandsPerSecond"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["p99Ms"].as_f64().unwrap() >= r["p50Ms"].as_f64().unwrap(),
            "{r}"
        );
    }
    // Every acknowledged command is in the log the views were rebuilt from.
    assert_eq!(v["rebuild"]["events"], 80, "{v}");
    // Neither the data dir nor the temporary one keeps anything.
    assert_eq!(std::fs::read_dir(cli.data_dir()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // Bad input: a clear usage error, nothing run.
    let run = cli.run(&["bench", "--writers", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--writers"), "{}", run.stderr);
}

/// A data dir that lost a key file is refused by name (`key_file`, exit 3),
/// not given a new key that cannot open what the old one made.
#[test]
fn a_data_dir_without_its_keys_is_refused_with_key_file() {
    let cli = Cli::new();
    cli.issue("keeps its string");
    std::fs::rename(
        cli.data_dir().join("jwt-keys.json"),
        cli.data_dir().join("jwt-keys.json.bak"),
    )
    .unwrap();
    let e = cli.fails(3, &["list"]);
    assert_eq!(e["code"], "key_file", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("jwt-keys.json"),
        "{e}"
    );
    assert!(!cli.data_dir().join("jwt-keys.json").exists());
}
