//! The CLI over NATS: `tokenledger --nats URL ...` against a real nats-server
//! (JetStream) and a spawned `tokenledger serve`, and `tokenledger watch`.
//!
//! Output and exit codes must be those of local mode (the quick-start flow
//! runs both ways and compares), refusals keep their codes and fields, no
//! server is exit 3, and `watch` prints each change once, in order, and
//! resumes from a position. Nothing waits by sleeping: a test waits for a
//! process to say so (or for a condition), with a deadline.

use ledger_testkit::{free_port, wait_for, NatsServer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{Run, BIN};
const WS: &str = "acme";
/// How long a process may take to reach a state a test waits for.
const DEADLINE: Duration = Duration::from_secs(60);

/// Where the CLI sends its work: a data dir, or a server over NATS.
enum Target {
    Local(PathBuf),
    Nats {
        url: String,
        /// A data dir the CLI must never create: proof that nothing ran locally.
        untouched: PathBuf,
    },
}

/// The binary with a clean environment, aimed at one target.
struct Cli {
    target: Target,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn local() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        Cli {
            target: Target::Local(dir.path().join("data")),
            _dir: dir,
        }
    }

    fn nats(url: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        Cli {
            target: Target::Nats {
                url: url.to_owned(),
                untouched: dir.path().join("never-created"),
            },
            _dir: dir,
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        for var in [
            "TOKENLEDGER_DATA_DIR",
            "TOKENLEDGER_WORKSPACE",
            "TOKENLEDGER_NATS",
            "TOKENLEDGER_ACCESS_TOKEN",
            "TOKENLEDGER_REFRESH_TOKEN",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        match &self.target {
            Target::Local(dir) => {
                c.arg("--data-dir").arg(dir);
            }
            Target::Nats { url, untouched } => {
                c.arg("--data-dir").arg(untouched).args(["--nats", url]);
            }
        }
        c.args(["--workspace", WS, "--actor", "user:tester"])
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().expect("run tokenledger"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all).json()
    }

    /// Runs with `--json`, expects exit code `exit` and nothing on stdout; the error object.
    fn fails(&self, exit: i32, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        assert_eq!(run.code, exit, "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        run.error()
    }

    fn assert_no_local_data(&self) {
        if let Target::Nats { untouched, .. } = &self.target {
            assert!(
                !untouched.exists(),
                "--nats must not open the data dir {}",
                untouched.display()
            );
        }
    }
}

/// A nats-server with JetStream and a `tokenledger serve` on it.
struct Stack {
    serve: Child,
    nats: NatsServer,
    _data: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        Stack::start_logging(None)
    }

    /// With `Some(file)`, the server logs everything (`RUST_LOG=trace`) to it.
    fn start_logging(log: Option<&std::path::Path>) -> Stack {
        Stack::start_logging_at(log.map(|file| (file, Some("trace"))))
    }

    /// With `Some((file, level))`, the server logs to the file, filtered by
    /// `RUST_LOG=level` (`None`: its default filter).
    fn start_logging_at(log: Option<(&std::path::Path, Option<&str>)>) -> Stack {
        let nats = NatsServer::start().expect("nats-server (run scripts/install-nats.sh)");
        let data = tempfile::tempdir().unwrap();
        let mut serve = Command::new(BIN);
        serve
            .arg("--data-dir")
            .arg(data.path().join("ledger"))
            .args(["serve", "--nats", &nats.url()])
            .env_remove("TOKENLEDGER_NATS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((log, level)) = log {
            serve.stderr(std::fs::File::create(log).unwrap());
            if let Some(level) = level {
                serve.env("RUST_LOG", level);
            }
        }
        let serve = serve.spawn().expect("spawn tokenledger serve");
        let stack = Stack {
            serve,
            nats,
            _data: data,
        };
        // Serving once a query is answered (the stream exists by then too).
        let cli = stack.cli();
        assert!(
            wait_for(DEADLINE, || cli.run(&["list"]).code == 0),
            "tokenledger serve never answered: {:?}",
            cli.run(&["list"])
        );
        stack
    }

    fn url(&self) -> String {
        self.nats.url()
    }

    fn cli(&self) -> Cli {
        Cli::nats(&self.url())
    }

    /// Stops the server with SIGTERM and waits for it, so that its log is
    /// complete; asserts a clean exit.
    fn stop(&mut self) {
        common::sigterm(&self.serve);
        let status = self.serve.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

fn id_of(reply: &Value) -> String {
    reply["token"]["resourceId"]
        .as_str()
        .or(reply["token"]["id"].as_str())
        .expect("token id")
        .to_owned()
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

/// The JSON with what differs between two runs (ids, times, hashes, token
/// strings, key ids, JWT claims) replaced by placeholders; the rest is kept.
fn shape(v: &Value) -> Value {
    fn leaf(key: &str, v: &Value) -> Value {
        let placeholder = match key {
            "resourceId" | "id" | "tokenId" | "eventId" | "commandId" | "jti" | "agentId" => {
                Some("<id>")
            }
            "hash" | "prevHash" => Some("<hash>"),
            "tokenStr" => Some("<jwt>"),
            "kid" => Some("<kid>"),
            "iat" | "exp" | "expires" => Some("<epoch>"),
            k if k.ends_with("At") || k == "occurredAt" => Some("<time>"),
            _ => None,
        };
        match placeholder {
            Some(p) if !v.is_null() && !v.is_object() && !v.is_array() => Value::from(p),
            _ => walk(v),
        }
    }
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), leaf(k, v))).collect(),
            Value::Array(a) => a.iter().map(walk).collect(),
            other => other.clone(),
        }
    }
    walk(v)
}

/// The quick-start flow; every output, in order, as JSON or as text.
fn quick_start(cli: &Cli) -> Vec<Value> {
    let mut out = Vec::new();
    let issued = cli.json(&[
        "issue",
        "--name",
        "CI Deploy",
        "--group",
        "readers",
        "--expires",
        "+30d",
    ]);
    let id = id_of(&issued);
    out.push(issued);
    out.push(cli.json(&["list"]));
    out.push(cli.json(&["get", "--name", "ci deploy"]));
    out.push(cli.json(&["get", &id, "--as-of-version", "1"]));
    out.push(cli.json(&["trash", &id, "--reason", "laptop lost"]));
    let hidden = cli.json(&["list"]);
    assert!(ids(&hidden).is_empty(), "trashed tokens are hidden");
    out.push(hidden);
    let only = cli.json(&["list", "--trashed", "only"]);
    assert_eq!(ids(&only), vec![id.clone()]);
    out.push(only);
    out.push(cli.json(&["history", &id]));
    // The human forms, with the id and times taken out.
    for args in [
        vec!["list", "--trashed", "only"],
        vec!["history", &id],
        vec!["get", &id],
        vec!["restore", &id],
    ] {
        let run = cli.run(&args);
        assert_eq!(run.code, 0, "{run:?}");
        let text: Vec<String> = run
            .stdout
            .replace(&id, "<id>")
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .map(|w| {
                        let bare = w.trim_matches(|c| c == '(' || c == ')');
                        if w.starts_with("20") {
                            "<time>"
                        } else if bare.len() >= 10 && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
                            "<n>" // epoch ms, a signing key id
                        } else if uuid::Uuid::parse_str(bare).is_ok() {
                            "<uuid>" // a string's jti
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        out.push(Value::from(text));
    }
    out
}

#[test]
fn quick_start_over_nats_prints_what_local_mode_prints() {
    let stack = Stack::start();
    let remote = stack.cli();
    let over_nats = quick_start(&remote);
    let local = quick_start(&Cli::local());
    assert_eq!(over_nats.len(), local.len());
    for (i, (n, l)) in over_nats.iter().zip(&local).enumerate() {
        assert_eq!(shape(n), shape(l), "output {i} differs over NATS");
    }
    // Spot checks of the values themselves.
    let issued = &over_nats[0];
    assert_eq!(issued["token"]["name"], "CI Deploy");
    assert_eq!(issued["token"]["version"], 1);
    assert_eq!(issued["positions"], serde_json::json!([1]));
    assert_eq!(
        issued["token"]["tokenStr"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        3
    );
    assert!(over_nats[2]["token"].get("tokenStr").is_none());
    assert_eq!(over_nats[4]["token"]["trashItem"]["reason"], "laptop lost");
    let types: Vec<&str> = over_nats[7]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["client_token_issued", "token_trashed"]);
    let restored = over_nats.last().unwrap().as_array().unwrap()[0].clone();
    assert!(
        restored
            .as_str()
            .unwrap()
            .starts_with("restored client token"),
        "{restored}"
    );
    remote.assert_no_local_data();
}

#[test]
fn every_command_goes_over_nats() {
    let stack = Stack::start();
    let cli = stack.cli();
    let id = id_of(&cli.json(&["issue", "--name", "svc", "--provided-id", "user-7"]));
    let v = cli.json(&["update", &id, "--name", "svc-2", "--expected-version", "1"]);
    assert_eq!(
        (v["token"]["name"].as_str(), v["token"]["version"].as_u64()),
        (Some("svc-2"), Some(2))
    );
    let v = cli.json(&["assign", &id, "--group", "a", "--group", "b"]);
    assert_eq!(v["token"]["permissionGroups"].as_array().unwrap().len(), 2);
    let v = cli.json(&["unassign", &id, "--group", "a"]);
    assert_eq!(v["token"]["permissionGroups"].as_array().unwrap().len(), 1);
    let v = cli.json(&["rotate", &id]);
    assert!(v["token"]["tokenStr"].is_string());
    // A provided id issued again is reused: nothing appended.
    let v = cli.json(&["issue", "--provided-id", "user-7"]);
    assert_eq!(
        (id_of(&v), v["positions"].clone()),
        (id.clone(), serde_json::json!([]))
    );
    // A retried commandId answers its first result and appends nothing.
    let command_id = uuid::Uuid::new_v4().to_string();
    let first = cli.json(&["trash", &id, "--command-id", &command_id]);
    let again = cli.json(&["trash", &id, "--command-id", &command_id]);
    assert_eq!(first["positions"], again["positions"]);
    cli.json(&["restore", &id]);
    cli.json(&["revoke", &id, "--reason", "leaked"]);
    let v = cli.json(&["purge", &id, "--force"]);
    assert!(v["token"].is_null());

    // Provider tokens, secrets from the environment, never echoed.
    let user = uuid::Uuid::new_v4().to_string();
    let run = Run::from(
        cli.command()
            .args([
                "--json",
                "register",
                "--user",
                &user,
                "--provider",
                "google",
            ])
            .args(["--account", "j@example.com"])
            .env("TOKENLEDGER_ACCESS_TOKEN", "ya29.first-secret")
            .output()
            .unwrap(),
    );
    let access = id_of(&run.json());
    assert!(!run.stdout.contains("ya29."));
    let run = Run::from(
        cli.command()
            .args(["--json", "refresh", &access])
            .env("TOKENLEDGER_ACCESS_TOKEN", "ya29.second-secret")
            .output()
            .unwrap(),
    );
    assert_eq!(run.json()["token"]["version"], 2);
    let v = cli.json(&["update-access", &access, "--account", "k@example.com"]);
    assert_eq!(v["token"]["accountName"], "k@example.com");
    // --body sends the wire JSON itself.
    let body = format!(r#"{{"tokenId": "{access}", "reason": "by body"}}"#);
    let v = cli.json(&["trash", "--body", &body]);
    assert_eq!(v["token"]["trashItem"]["reason"], "by body");
    let list = cli.json(&[
        "list",
        "--kind",
        "access",
        "--trashed",
        "include",
        "--user",
        &user,
    ]);
    assert_eq!(ids(&list), vec![access.clone()]);
    cli.assert_no_local_data();
}

/// Even at `RUST_LOG=trace`, neither the server nor the CLI logs a provider
/// secret or a token string (async-nats traces every payload).
#[test]
fn trace_logs_carry_no_secret_and_no_token_string() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut stack = Stack::start_logging(Some(&log));
    let cli = stack.cli();
    let secret = "ya29.trace-secret-5150";
    let traced = |args: &[&str], secret_env: Option<&str>| {
        let mut c = cli.command();
        c.args(args).env("RUST_LOG", "trace");
        if let Some(s) = secret_env {
            c.env("TOKENLEDGER_ACCESS_TOKEN", s);
        }
        Run::from(c.output().unwrap())
    };
    let user = uuid::Uuid::new_v4().to_string();
    let run = traced(
        &[
            "--json",
            "register",
            "--user",
            &user,
            "--provider",
            "google",
            "--account",
            "t@example.com",
        ],
        Some(secret),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains(secret), "the CLI traced the secret");
    // A reveal carries the secret in its reply, and must not log it either.
    let access = id_of(&run.json());
    let run = traced(&["--json", "get", &access, "--reveal"], None);
    assert_eq!(run.json()["token"]["accessToken"], secret);
    assert!(
        !run.stderr.contains(secret),
        "the CLI traced the revealed secret"
    );
    let run = traced(&["--json", "issue", "--name", "traced"], None);
    let token_str = run.json()["token"]["tokenStr"]
        .as_str()
        .expect("an issue reply carries its string")
        .to_owned();
    assert!(
        !run.stderr.contains(&token_str),
        "the CLI traced the string"
    );
    // Stopped, it has logged all it would about them.
    stack.stop();
    let server = std::fs::read_to_string(&log).unwrap();
    assert!(
        server.contains("TRACE") || server.contains("DEBUG"),
        "trace logging is on"
    );
    assert!(!server.contains(secret), "the server traced the secret");
    assert!(!server.contains(&token_str), "the server traced the string");
}

#[test]
fn reveal_shows_live_secrets_as_on_the_data_dir_and_leaves_an_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    // The server's default filter: the audit record must be in it unasked.
    let stack = Stack::start_logging_at(Some((&log, None)));
    let remote = stack.cli();
    let local = Cli::local();
    let secret = "ya29.reveal-secret-7";
    let user = uuid::Uuid::new_v4().to_string();
    let mut revealed_ids = Vec::new();
    let mut revoked_ids = Vec::new();
    for cli in [&remote, &local] {
        let run = Run::from(
            cli.command()
                .args([
                    "--json",
                    "register",
                    "--user",
                    &user,
                    "--provider",
                    "google",
                ])
                .args(["--account", "r@example.com"])
                .env("TOKENLEDGER_ACCESS_TOKEN", secret)
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let access = id_of(&run.json());
        let issued = cli.json(&["issue", "--name", "shown"]);
        let minted = issued["token"]["tokenStr"].clone();
        assert!(minted.is_string(), "{issued}");

        // Plain get: fingerprints only.
        let plain = cli.json(&["get", &access]);
        assert!(plain["token"]["accessToken"].is_null(), "{plain}");
        // --reveal: the plaintext, in JSON and in the table.
        let v = cli.json(&["get", &access, "--reveal", "--actor", "service:billing"]);
        assert_eq!(v["token"]["accessToken"], secret, "{v}");
        assert_eq!(v["token"]["version"], 1);
        let human = cli.run(&["get", &access, "--reveal"]);
        assert!(human.stdout.contains(secret), "{}", human.stdout);
        let v = cli.json(&["get", "--name", "SHOWN", "--reveal"]);
        assert_eq!(v["token"]["tokenStr"], minted);
        // --show-token-str: the current string, over NATS as on the data dir.
        let v = cli.json(&["get", "--name", "shown", "--show-token-str"]);
        assert_eq!(v["token"]["tokenStr"], minted);
        let v = cli.json(&["get", &access, "--show-token-str"]);
        assert!(v["token"]["accessToken"].is_null(), "{v}");

        // Refusals: a point in the past, a trashed or revoked token.
        let run = cli.run(&["get", &access, "--reveal", "--as-of-version", "1"]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        cli.json(&["trash", &access]);
        // An access token has no string: --show-token-str shows its view,
        // trashed or not, without reading (or recording a read of) its secrets.
        let v = cli.json(&["get", &access, "--show-token-str"]);
        assert!(v["token"]["trashItem"].is_object(), "{v}");
        assert!(v["token"]["accessToken"].is_null(), "{v}");
        let e = cli.fails(1, &["get", &access, "--reveal"]);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("trashed"), Some("tokenId"))
        );
        assert!(!e.to_string().contains(secret));
        let shown = id_of(&issued);
        cli.json(&["revoke", &shown]);
        let e = cli.fails(1, &["get", &shown, "--reveal"]);
        assert_eq!(e["code"], "revoked");
        // The caller hears only "inactive"; the reason goes to the audit trail.
        let v = cli.json(&["verify", minted.as_str().unwrap()]);
        assert_eq!(v, json!({ "active": false }));
        revealed_ids.push(access);
        revoked_ids.push(shown);
    }
    remote.assert_no_local_data();
    // A string the command did not mint (a retry of its commandId, an issue
    // that finds the token by its provided id) is recorded as a reveal is.
    let command_id = uuid::Uuid::new_v4().to_string();
    let issue = [
        "issue",
        "--provided-id",
        "audited",
        "--command-id",
        &command_id,
    ];
    let first = remote.json(&issue);
    let strings = [
        remote.json(&issue)["token"]["tokenStr"].clone(),
        remote.json(&["issue", "--provided-id", "audited"])["token"]["tokenStr"].clone(),
    ];
    assert!(first["token"]["tokenStr"].is_string(), "{first}");
    assert_eq!(
        strings,
        [
            first["token"]["tokenStr"].clone(),
            first["token"]["tokenStr"].clone()
        ]
    );
    let resent_id = id_of(&first);
    let resent = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| {
                l.contains("audit: existing token string sent in a reply")
                    && l.contains(resent_id.as_str())
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(DEADLINE, || resent().len() == 2),
        "not one record per string re-sent: {:?}",
        resent()
    );
    let records = resent();
    assert!(
        records[0].contains("retry=true") && records[0].contains("tester"),
        "{records:?}"
    );
    assert!(records[1].contains("retry=false"), "{records:?}");
    // The server recorded who read the secret, and not the secret.
    let remote_id = &revealed_ids[0];
    let audit = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("audit: token secrets revealed"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(DEADLINE, || audit()
            .iter()
            .any(|l| l.contains(remote_id.as_str()) && l.contains("billing"))),
        "no audit record of the reveal: {:?}",
        std::fs::read_to_string(&log).unwrap()
    );
    // Two reveals of the access token (JSON and table); --show-token-str
    // on it is none.
    assert_eq!(
        audit()
            .iter()
            .filter(|l| l.contains(remote_id.as_str()))
            .count(),
        2,
        "{:?}",
        audit()
    );
    let refused = &revoked_ids[0];
    assert!(
        wait_for(DEADLINE, || std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .any(|l| l.contains("audit: token string inactive")
                && l.contains("revoked")
                && l.contains(refused.as_str()))),
        "no audit record of the refused string: {:?}",
        std::fs::read_to_string(&log).unwrap()
    );
    let server_log = std::fs::read_to_string(&log).unwrap();
    assert!(!server_log.contains(secret), "the server logged the secret");
    assert!(
        !server_log.contains("eyJ"),
        "the server logged a token string"
    );
}

#[test]
fn refusals_and_invalid_input_over_nats_keep_codes_and_fields() {
    let stack = Stack::start();
    let remote = stack.cli();
    let local = Cli::local();
    for cli in [&remote, &local] {
        let id = id_of(&cli.json(&["issue", "--name", "taken"]));
        // Rules: exit 1, with the field (and the current version on conflict).
        let e = cli.fails(1, &["issue", "--name", "TAKEN"]);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("name_taken"), Some("name"))
        );
        let e = cli.fails(1, &["trash", &id, "--expected-version", "7"]);
        assert_eq!(e["code"], "conflict");
        assert_eq!(e["field"], "expectedVersion");
        assert_eq!(e["currentVersion"], 1);
        let e = cli.fails(1, &["get", "--name", "nobody"]);
        assert_eq!(e["code"], "not_found");
        assert_eq!(e["message"], "no token named \"nobody\" in workspace acme");
        let missing = uuid::Uuid::new_v4().to_string();
        let e = cli.fails(1, &["history", &missing]);
        assert_eq!(
            e["message"],
            format!("no token {missing} in workspace acme")
        );
        // Invalid input: exit 2 with the field, whether the CLI or the server finds it.
        let e = cli.fails(2, &["issue", "--name", ""]);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("invalid_input"), Some("name"))
        );
        let e = cli.fails(2, &["list", "--cursor", "not-a-cursor"]);
        assert_eq!(e["field"], "cursor");
        let e = cli.fails(2, &["list", "--limit", "0"]);
        assert_eq!(e["field"], "limit");
        let e = cli.fails(2, &["trash", "--body", r#"{"tokenId": "x"}"#]);
        assert_eq!(e["code"], "invalid_input");
    }
    // The human error line names the field too (a bad cursor is found by the server).
    let run = remote.run(&["list", "--cursor", "zz"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("error: invalid_input: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.trim_end().ends_with("(field cursor)"),
        "{}",
        run.stderr
    );
    // Only on the data dir: an earlier version's string.
    let e = remote.fails(
        2,
        &[
            "get",
            "--name",
            "taken",
            "--show-token-str",
            "--as-of-version",
            "1",
        ],
    );
    assert_eq!(e["field"], "showTokenStr");
    let e = remote.fails(2, &["import", "-"]);
    assert_eq!(e["field"], "nats");
    remote.assert_no_local_data();
}

#[test]
fn no_server_is_exit_3_unavailable() {
    // Nothing listens on this port.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let cli = Cli::nats(&url);
    for args in [
        &["issue", "--name", "x"][..],
        &["list"],
        &["watch", "--count", "1"],
    ] {
        let e = cli.fails(3, args);
        assert_eq!(e["code"], "unavailable", "{args:?}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("no tokenledger server answers on {url}")),
            "{message}"
        );
    }
    let run = cli.run(&["list"]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.starts_with(&format!(
            "error: unavailable: no tokenledger server answers on {url}"
        )),
        "{}",
        run.stderr
    );
    cli.assert_no_local_data();

    // NATS is up but no ledger serves it: no responders, at once.
    let nats = NatsServer::start().expect("nats-server");
    let cli = Cli::nats(&nats.url());
    let e = cli.fails(3, &["trash", &uuid::Uuid::new_v4().to_string()]);
    assert_eq!(e["code"], "unavailable");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("tokens.cmd.acme.trash_token"),
        "{e}"
    );
    // A malformed URL is the caller's mistake.
    let e = Cli::nats("nats://bad host").fails(2, &["list"]);
    assert_eq!(e["field"], "nats");
    // watch needs --nats.
    let e = Cli::local().fails(2, &["watch"]);
    assert_eq!(e["field"], "nats");
}

/// A running `watch`: its stdout collected in a thread, its stderr lines sent
/// on a channel.
struct Watch {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Watch {
    /// [`Watch::spawn`] leaving stdout to the caller, to read while it runs.
    fn spawn_piped(cli: &Cli, args: &[&str]) -> Watch {
        Watch::spawn_inner(cli, args, false)
    }

    fn spawn(cli: &Cli, args: &[&str]) -> Watch {
        Watch::spawn_inner(cli, args, true)
    }

    fn spawn_inner(cli: &Cli, args: &[&str], collect_stdout: bool) -> Watch {
        let mut child = cli
            .command()
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn watch");
        let stdout = match collect_stdout {
            true => {
                let mut out = child.stdout.take().unwrap();
                std::thread::spawn(move || {
                    let mut s = String::new();
                    out.read_to_string(&mut s).unwrap();
                    s
                })
            }
            false => std::thread::spawn(String::new),
        };
        let stderr = lines_of(child.stderr.take().unwrap());
        Watch {
            child,
            stderr,
            stdout,
        }
    }

    /// Waits for "watching ... from position P" on stderr; returns P.
    fn subscribed(&self) -> u64 {
        loop {
            let line = self
                .stderr
                .recv_timeout(DEADLINE)
                .expect("watch never said it was watching");
            if let Some((_, p)) = line.rsplit_once("from position ") {
                assert!(line.starts_with("watching "), "{line}");
                return p.trim().parse().expect("a position");
            }
        }
    }

    /// Waits for the process to exit by itself; its exit code and stdout.
    fn finish(mut self) -> (i32, String) {
        let mut status = None;
        let exited = wait_for(DEADLINE, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
            panic!("watch did not exit: {}", self.stdout.join().unwrap());
        }
        (
            status.unwrap().code().expect("exited, not killed"),
            self.stdout.join().unwrap(),
        )
    }
}

fn positions(reply: &Value) -> Vec<u64> {
    reply["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

#[test]
fn watch_sees_each_change_after_it_started_once_and_in_order() {
    let stack = Stack::start();
    let cli = stack.cli();
    // History before the watcher starts: not shown.
    let old = id_of(&cli.json(&["issue", "--name", "before"]));
    // "From now on" starts after the stream's last message; wait until that
    // event is published so that the watcher's start is known.
    let (code, _) = Watch::spawn(&cli, &["--from-start", "--count", "1"]).finish();
    assert_eq!(code, 0);
    let watch = Watch::spawn(&cli, &["--json", "--count", "5"]);
    let from = watch.subscribed();
    assert_eq!(from, 2, "the next position after the one event so far");

    let mut expected = Vec::new();
    let issued = cli.json(&["issue", "--name", "watched"]);
    let id = id_of(&issued);
    expected.extend(
        positions(&issued)
            .into_iter()
            .map(|p| (p, "client_token_issued")),
    );
    // Another workspace's change is filtered out by --workspace.
    let run = Run::from(
        cli.command()
            .args(["--workspace", "elsewhere", "issue", "--name", "x"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    for (args, ty) in [
        (
            vec!["update", &id, "--name", "renamed"],
            "client_token_updated",
        ),
        (vec!["trash", &id, "--reason", "why"], "token_trashed"),
        (vec!["restore", &id], "token_restored"),
        (vec!["revoke", &old, "--reason", "leaked"], "token_revoked"),
        // One more than --count: never printed.
        (vec!["revoke", &id], "token_revoked"),
    ] {
        let r = cli.json(&args);
        expected.extend(positions(&r).into_iter().map(|p| (p, ty)));
    }
    let (code, stdout) = watch.finish();
    assert_eq!(code, 0);
    let got: Vec<(u64, String)> = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["workspaceId"], WS);
            assert!(v["hash"].is_string() && v["eventId"].is_string());
            (
                v["position"].as_u64().unwrap(),
                v["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = expected[..5]
        .iter()
        .map(|(p, t)| (*p, (*t).to_owned()))
        .collect();
    assert_eq!(got, want, "each change once, in order, nothing else");
}

/// [`ledger_testkit::cap_tokens_stream`], from a test without a runtime.
fn cap_stream(url: &str, max: Option<i64>) {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ledger_testkit::cap_tokens_stream(url, max, true));
}

#[test]
fn status_shows_the_head_the_publication_lag_and_the_lease_holder() {
    let mut stack = Stack::start();
    let cli = stack.cli();
    cli.json(&["issue", "--name", "one"]);
    // Publication follows the commit: wait until the stream has it.
    let mut s = Value::Null;
    let published = wait_for(DEADLINE, || {
        s = cli.json(&["status"]);
        s["publicationLag"] == 0
    });
    assert!(published, "{s}");
    assert_eq!(s["ledger"], json!({"answers": true, "head": 1}), "{s}");
    assert_eq!(s["stream"]["lastSequence"], 1, "{s}");
    assert_eq!(s["publicationLag"], 0, "{s}");
    let holder = &s["writerLease"]["holder"];
    assert_eq!(holder["pid"], stack.serve.id(), "{s}");
    let data_dir = std::fs::canonicalize(stack._data.path().join("ledger")).unwrap();
    assert_eq!(holder["dataDir"], data_dir.display().to_string());

    // An acknowledged event the stream does not take: the lag shows it.
    cap_stream(&stack.url(), Some(1));
    cli.json(&["issue", "--name", "two"]);
    let s = cli.json(&["status"]);
    assert_eq!(s["ledger"]["head"], 2, "{s}");
    assert_eq!(s["stream"]["lastSequence"], 1, "{s}");
    assert_eq!(s["publicationLag"], 1, "{s}");
    let human = cli.run(&["status"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human
            .stdout
            .contains("1 acknowledged events not published yet"),
        "{human:?}"
    );
    cli.assert_no_local_data();
    let e = Cli::local().fails(2, &["status"]);
    assert_eq!(e["field"], "nats", "{e}");

    // With the ledger down, the report still shows the stream, and the
    // exit code says so: a health check can use it.
    cap_stream(&stack.url(), None);
    stack.stop();
    let down = cli.run(&["--json", "status"]);
    assert_eq!(down.code, 3, "{down:?}");
    assert_eq!(down.report()["ledger"]["answers"], false, "{down:?}");
    assert_eq!(down.report()["stream"]["exists"], true, "{down:?}");
    assert_eq!(down.error()["code"], "unavailable", "{down:?}");
}

#[test]
fn watch_from_now_starts_past_the_ledgers_head_even_while_the_stream_lags() {
    let stack = Stack::start();
    let cli = stack.cli();
    cli.json(&["issue", "--name", "published"]);
    let (code, _) = Watch::spawn(&cli, &["--from-start", "--count", "1"]).finish();
    assert_eq!(code, 0, "position 1 is in the stream");
    // The stream takes no more: position 2 is acknowledged but not published.
    cap_stream(&stack.url(), Some(1));
    cli.json(&["issue", "--name", "acknowledged, not yet published"]);
    let watch = Watch::spawn(&cli, &["--json", "--count", "1"]);
    assert_eq!(
        watch.subscribed(),
        3,
        "now is after the head (2), not the stream's end (1)"
    );
    cap_stream(&stack.url(), None);
    let after = cli.json(&["issue", "--name", "after the watcher started"]);
    let (code, stdout) = watch.finish();
    assert_eq!(code, 0);
    let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed["position"], json!(positions(&after)[0]), "{stdout}");
}

#[test]
fn watch_resumes_from_a_position_and_filters() {
    let stack = Stack::start();
    let cli = stack.cli();
    let a = id_of(&cli.json(&["issue", "--name", "a"]));
    cli.json(&["trash", &a, "--reason", "laptop lost"]);
    cli.json(&["restore", &a]);
    let b = id_of(&cli.json(&["issue", "--name", "b"]));
    cli.json(&["revoke", &b, "--reason", "leaked"]);

    // From position 2: the rest of the log, as lines.
    let watch = Watch::spawn(&cli, &["--from", "2", "--count", "4"]);
    assert_eq!(watch.subscribed(), 2);
    let (code, stdout) = watch.finish();
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let cols: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split("  ").collect::<Vec<_>>())
        .collect();
    let first = &cols[0];
    assert_eq!(first[0], "2");
    assert!(
        first[1].starts_with("20") && first[1].ends_with('Z'),
        "{first:?}"
    );
    assert_eq!(
        &first[2..7],
        [WS, a.as_str(), "token_trashed", "v2", "user:tester"]
    );
    assert_eq!(first[7], "trashed: laptop lost");
    assert_eq!(cols[1][0], "3");
    assert_eq!(
        (cols[2][0], cols[2][3], cols[2][4]),
        ("4", b.as_str(), "client_token_issued")
    );
    assert_eq!(cols[2][7], "name \"b\"");
    assert_eq!(cols[3][7], "revoked: leaked");

    // Filters: one token, one type, from the start.
    let watch = Watch::spawn(
        &cli,
        &[
            "--from-start",
            "--token",
            &a,
            "--type",
            "token_restored",
            "--count",
            "1",
            "--json",
        ],
    );
    assert_eq!(watch.subscribed(), 1);
    let (code, stdout) = watch.finish();
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (v["position"].as_u64(), v["type"].as_str()),
        (Some(3), Some("token_restored"))
    );

    // Sealed secrets: fingerprints only.
    let run = Run::from(
        cli.command()
            .args([
                "--json",
                "register",
                "--user",
                &uuid::Uuid::new_v4().to_string(),
            ])
            .args(["--provider", "google", "--account", "j@example.com"])
            .env("TOKENLEDGER_ACCESS_TOKEN", "ya29.do-not-print")
            .env("TOKENLEDGER_REFRESH_TOKEN", "1//refresh-do-not-print")
            .output()
            .unwrap(),
    );
    let registered = run.json();
    for json in [true, false] {
        let mut args = vec!["--from", "6", "--count", "1"];
        if json {
            args.push("--json");
        }
        let watch = Watch::spawn(&cli, &args);
        watch.subscribed();
        let (code, stdout) = watch.finish();
        assert_eq!(code, 0);
        assert!(!stdout.contains("do-not-print"), "{stdout}");
        assert!(
            !stdout.contains("ciphertext") && !stdout.contains("nonce"),
            "{stdout}"
        );
        let fingerprint = registered["token"]["accessTokenFingerprint"]
            .as_str()
            .unwrap();
        assert!(stdout.contains(fingerprint), "{stdout}");
        if json {
            let v: Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(
                v["data"]["accessToken"],
                serde_json::json!({ "fingerprint": fingerprint })
            );
            assert_eq!(v["data"]["refreshToken"].as_object().unwrap().len(), 1);
        }
    }
}

#[test]
fn watch_stops_cleanly_on_sigterm_and_sigint() {
    let stack = Stack::start();
    let cli = stack.cli();
    for signal in ["-TERM", "-INT"] {
        let watch = Watch::spawn(&cli, &[]);
        watch.subscribed();
        let status = Command::new("kill")
            .args([signal, &watch.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let (code, stdout) = watch.finish();
        assert_eq!(code, 0, "{signal}");
        assert!(stdout.is_empty());
    }
}

/// The lines of a child's output as they come, read by a thread of their own.
fn lines_of(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next verdict line of the local verifier, skipping event lines.
fn next_verdict(lines: &mpsc::Receiver<String>) -> Value {
    loop {
        let line = lines.recv_timeout(DEADLINE).expect("a verdict line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v.get("localVerifier").is_some() {
            return v["localVerifier"].clone();
        }
    }
}

/// `watch --json --verify-file` on a freshly issued token's string, seen
/// subscribed and saying the string is active.
struct VerifyingWatch {
    id: String,
    watch: Watch,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl VerifyingWatch {
    fn start(cli: &Cli, name: &str, extra: &[&str]) -> VerifyingWatch {
        let issued = cli.json(&["issue", "--name", name]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.jwt");
        std::fs::write(&file, issued["token"]["tokenStr"].as_str().unwrap()).unwrap();
        let mut args = vec!["--json", "--verify-file", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut watch = Watch::spawn_piped(cli, &args);
        let lines = lines_of(watch.child.stdout.take().unwrap());
        watch.subscribed();
        assert_eq!(next_verdict(&lines), json!({"active": true}));
        VerifyingWatch {
            id: id_of(&issued),
            watch,
            lines,
            _dir: dir,
        }
    }

    /// SIGTERM, then waits for the watch to exit.
    fn stop(mut self) {
        common::sigterm(&self.watch.child);
        assert!(wait_for(DEADLINE, || self
            .watch
            .child
            .try_wait()
            .unwrap()
            .is_some()));
    }
}

#[test]
fn watch_with_max_staleness_refuses_a_string_while_its_revocation_cannot_arrive() {
    let stack = Stack::start();
    let cli = stack.cli();
    let w = VerifyingWatch::start(&cli, "edge", &["--max-staleness", "3"]);

    // The stream refuses new messages: the revocation is acknowledged and
    // cannot reach the verifier, which says it cannot vouch for the string
    // any more, with no event to show.
    cap_stream(&stack.url(), Some(1));
    cli.json(&["revoke", &w.id]);
    assert_eq!(
        next_verdict(&w.lines),
        json!({"active": false, "reason": "stale"})
    );

    // The stream takes messages again: the revocation arrives.
    cap_stream(&stack.url(), None);
    assert_eq!(next_verdict(&w.lines)["reason"], "revoked");
    w.stop();
}

/// With a filter that leaves out the event behind a change (a revocation
/// under `--type token_trashed`), the change of verdict is still shown.
#[test]
fn watch_with_a_type_filter_still_shows_the_verdict_change() {
    let stack = Stack::start();
    let cli = stack.cli();
    let w = VerifyingWatch::start(&cli, "filtered", &["--type", "token_trashed"]);
    cli.json(&["revoke", &w.id]);
    assert_eq!(next_verdict(&w.lines)["reason"], "revoked");
    w.stop();
}

#[test]
fn watch_shows_the_local_verifier_dropping_a_revoked_string() {
    let stack = Stack::start();
    let cli = stack.cli();
    let issued = cli.json(&["issue", "--name", "gateway"]);
    let id = id_of(&issued);
    let token_str = issued["token"]["tokenStr"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token.jwt");
    std::fs::write(&file, &token_str).unwrap();

    let watch = Watch::spawn(
        &cli,
        &[
            "--json",
            "--count",
            "2",
            "--verify-file",
            file.to_str().unwrap(),
        ],
    );
    watch.subscribed();
    cli.json(&["assign", &id, "--group", "readers"]);
    let revoked = cli.json(&["revoke", &id, "--reason", "leaked"]);
    let (code, stdout) = watch.finish();
    assert_eq!(code, 0);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // active at start; the assignment keeps it active (no new verdict line);
    // the revocation turns it inactive right after that event.
    assert_eq!(
        lines[0],
        serde_json::json!({"localVerifier": {"active": true}})
    );
    assert_eq!(lines[1]["type"], "permission_groups_assigned");
    assert_eq!(lines[2]["type"], "token_revoked");
    assert_eq!(
        lines[3],
        serde_json::json!({"localVerifier": {"active": false, "reason": "revoked",
                                 "afterPosition": positions(&revoked)[0]}})
    );
    assert_eq!(lines.len(), 4);
    assert!(
        !stdout.contains(&token_str),
        "the string itself is never printed"
    );
}
