//! `tokenledger recover`: a data dir whose disk is gone comes back from the
//! stream `TOKENS` and a backup of its key files, as the ledger it was; and
//! what recover cannot do it refuses, leaving nothing behind.
//!
//! Against a real nats-server and `tokenledger serve` processes: a history
//! with every kind of token and a key rotation is served, the server stops
//! cleanly, and its data dir is taken as lost.

use ledger_testkit::{wait_for, NatsServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{Reaped, Run, BIN};

const DEADLINE: Duration = Duration::from_secs(60);
const SECRET: &str = "ya29.recover-me";

fn cli(data: &Path, url: Option<&str>, args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(data);
    if let Some(url) = url {
        c.args(["--nats", url]);
    }
    c.args(["--workspace", "acme", "--json", "--actor", "service:ops"])
        .args(args)
        .env_remove("TOKENLEDGER_MASTER_KEY")
        .env_remove("TOKENLEDGER_NATS")
        .stdin(Stdio::null());
    Run::from(c.output().expect("run tokenledger"))
}

fn serve(data: &Path, url: &str) -> Reaped {
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--nats", url, "--writer-lease-secs", "2"])
        .env_remove("TOKENLEDGER_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tokenledger serve");
    Reaped::new(child)
}

/// SIGTERM, and the clean exit it must bring (the lease released, a
/// checkpoint of the head signed).
fn stop(mut serving: Reaped) {
    common::sigterm(&serving);
    assert!(serving.wait().unwrap().success(), "serve stops cleanly");
}

/// A served history, stopped: what was lost, and what it looked like.
struct Lost {
    nats: NatsServer,
    dir: tempfile::TempDir,
    head: u64,
    head_hash: String,
    list: Value,
    /// A live token's string, signed by the key before the rotation.
    old_string: String,
    access: uuid::Uuid,
}

impl Lost {
    fn new() -> Lost {
        let nats = NatsServer::start().expect("nats-server (run scripts/install-nats.sh)");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("lost");
        let url = nats.url();
        let server = serve(&data, &url);
        let over = |args: &[&str]| cli(&data, Some(&url), args);
        assert!(
            wait_for(DEADLINE, || over(&["list"]).code == 0),
            "the ledger never answered"
        );
        let alpha = over(&["issue", "--name", "alpha"]).json();
        let old_string = alpha["token"]["tokenStr"].as_str().unwrap().to_owned();
        let beta = over(&["issue", "--name", "beta"]).json();
        over(&["revoke", beta["token"]["resourceId"].as_str().unwrap()]).json();
        over(&["keys", "rotate"]).json();
        over(&["issue", "--name", "gamma"]).json();
        let register = |account: &str| {
            let mut c = Command::new(BIN);
            c.arg("--data-dir")
                .arg(&data)
                .args(["--nats", &url, "--workspace", "acme", "--json"])
                .args(["register", "--user", &uuid::Uuid::new_v4().to_string()])
                .args(["--provider", "google", "--account", account])
                .env("TOKENLEDGER_ACCESS_TOKEN", SECRET)
                .stdin(Stdio::null());
            let v = Run::from(c.output().unwrap()).json();
            v["token"]["id"].as_str().unwrap().to_owned()
        };
        let access = register("kept@example.com");
        let gone = register("gone@example.com");
        over(&["trash", &gone]).json();
        over(&["purge", &gone]).json();
        stop(server);

        let verified = cli(&data, None, &["audit", "verify"]).json();
        let head = verified["summary"]["headPosition"].as_u64().unwrap();
        assert_eq!(head, 8, "{verified}");
        let list = cli(&data, None, &["list", "--trashed", "include"]).json();
        Lost {
            head_hash: verified["summary"]["headHash"].as_str().unwrap().to_owned(),
            list,
            old_string,
            access: access.parse().unwrap(),
            head,
            nats,
            dir,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("lost")
    }

    fn url(&self) -> String {
        self.nats.url()
    }

    /// A new data dir holding copies of the lost one's files named.
    fn new_dir(&self, name: &str, files: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(self.data().join(f), dir.join(f)).unwrap();
        }
        dir
    }

    fn recover(&self, dir: &Path, args: &[&str]) -> Run {
        let mut all = vec!["recover"];
        all.extend_from_slice(args);
        cli(dir, Some(&self.url()), &all)
    }
}

/// Nothing that looks like a ledger, finished or half-made, is in `dir`.
fn assert_no_ledger(dir: &Path) {
    assert!(!dir.join("ledger.sled").exists(), "{}", dir.display());
    assert!(!dir.join(".recover.tmp").exists(), "{}", dir.display());
}

#[test]
fn a_lost_data_dir_comes_back_from_the_stream_and_its_key_files() {
    let lost = Lost::new();
    let checkpoint = lost
        .data()
        .join("checkpoints")
        .join(format!("{:020}.note", lost.head));
    assert!(checkpoint.is_file(), "serve signs its head at a clean stop");
    let dir = lost.new_dir(
        "recovered",
        &[
            "master.key",
            "jwt-keys.json",
            "datakeys.bin",
            "checkpoint-key.json",
        ],
    );
    let report = lost
        .recover(&dir, &["--checkpoint", checkpoint.to_str().unwrap()])
        .json();
    assert_eq!(report["recovered"]["events"], lost.head, "{report}");
    assert_eq!(report["recovered"]["headHash"], lost.head_hash, "{report}");
    assert_eq!(
        report["checkpoints"][0]["outcome"], "matches",
        "the signed head of the lost ledger: {report}"
    );
    assert_eq!(report["missingSigningKeys"], json!([]), "{report}");
    assert_eq!(report["clientTokensUnverifiable"], 0, "{report}");
    assert_eq!(report["accessTokensWithoutDataKey"], 0, "{report}");
    assert_eq!(report["newKeyFiles"], json!([]), "{report}");

    // The same ledger: it verifies to the same head, lists the same tokens,
    // verifies a string signed before the rotation, opens a sealed secret.
    let verified = cli(&dir, None, &["audit", "verify"]).json();
    assert_eq!(verified["summary"]["headHash"], lost.head_hash);
    let list = cli(&dir, None, &["list", "--trashed", "include"]).json();
    assert_eq!(list, lost.list);
    let introspected = cli(&dir, None, &["verify", &lost.old_string]).json();
    assert_eq!(introspected["active"], true, "{introspected}");
    {
        let store = ledger_store::Store::open(&dir, Default::default()).unwrap();
        let events = store.token_events(&lost.access, None).unwrap();
        let ledger_core::EventData::AccessTokenRegistered(r) = &events[0].data else {
            panic!("{:?}", events[0].data)
        };
        let secret = store
            .open_secret(&lost.access, "accessToken", &r.access_token)
            .unwrap();
        assert_eq!(secret.expose(), SECRET);
        store.shutdown().unwrap();
    }

    // And it serves on: the stream is its log, the next command is the
    // next position, published as such.
    let server = serve(&dir, &lost.url());
    let over = |args: &[&str]| cli(&dir, Some(&lost.url()), args);
    assert!(
        wait_for(DEADLINE, || over(&["list"]).code == 0),
        "the recovered ledger never answered"
    );
    let issued = over(&["issue", "--name", "delta"]).json();
    assert_eq!(issued["positions"], json!([lost.head + 1]), "{issued}");
    assert!(
        wait_for(DEADLINE, || {
            let s = over(&["status"]);
            s.code == 0 && s.json()["stream"]["lastSequence"] == lost.head + 1
        }),
        "{:?}",
        over(&["status"])
    );
    stop(server);
}

#[test]
fn recover_refuses_what_it_cannot_do_and_leaves_nothing_behind() {
    let lost = Lost::new();

    // Without the key files: refused, naming the flag that overrides it.
    let bare = lost.new_dir("bare", &[]);
    let refused = lost.recover(&bare, &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let e = refused.error();
    assert_eq!(e["field"], "new-keys", "{e}");
    assert!(e["message"].as_str().unwrap().contains("master.key"), "{e}");
    assert_no_ledger(&bare);

    // With --new-keys: the history comes back, and the report counts what
    // the new keys cannot do: the two live client tokens' strings (two
    // signing keys: before and after the rotation) and the one access
    // token not purged.
    let report = lost.recover(&bare, &["--new-keys"]).json();
    assert_eq!(report["recovered"]["events"], lost.head, "{report}");
    assert_eq!(report["clientTokensUnverifiable"], 2, "{report}");
    assert_eq!(
        report["missingSigningKeys"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(report["accessTokensWithoutDataKey"], 1, "{report}");
    assert_eq!(
        report["newKeyFiles"],
        json!(["master.key", "jwt-keys.json"]),
        "{report}"
    );
    let introspected = cli(&bare, None, &["verify", &lost.old_string]).json();
    assert_eq!(introspected["active"], false, "{introspected}");

    // A data dir that holds a ledger: refused, untouched.
    let again = lost.recover(&bare, &["--new-keys"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert_eq!(again.error()["field"], "data-dir");
    let verified = cli(&bare, None, &["audit", "verify"]).json();
    assert_eq!(verified["summary"]["headHash"], lost.head_hash);

    // While a ledger serves the stream: refused, naming the holder.
    let server = serve(&lost.data(), &lost.url());
    assert!(
        wait_for(DEADLINE, || cli(&lost.data(), Some(&lost.url()), &["list"])
            .code
            == 0),
        "the ledger never answered"
    );
    let beside = lost.new_dir("beside", &["master.key", "jwt-keys.json"]);
    let refused = lost.recover(&beside, &[]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let e = refused.error();
    assert_eq!(e["code"], "conflict", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("writer lease"),
        "{e}"
    );
    assert_no_ledger(&beside);
    stop(server);

    // A stream with a forged event at its end (someone with the right to
    // publish there): the check fails at that position and nothing stays.
    let forged = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let client = async_nats::connect(lost.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream("TOKENS").await.unwrap();
            let last = stream.get_raw_message(lost.head).await.unwrap();
            let mut event: Value = serde_json::from_slice(&last.payload).unwrap();
            event["position"] = json!(lost.head + 1);
            event["eventId"] = json!(uuid::Uuid::now_v7().to_string());
            let subject = last.subject.to_string();
            let ack = js
                .publish(subject, serde_json::to_vec(&event).unwrap().into())
                .await
                .unwrap()
                .await
                .unwrap();
            ack.sequence
        })
    };
    assert_eq!(forged, lost.head + 1);
    let tampered = lost.new_dir("tampered", &["master.key", "jwt-keys.json"]);
    let refused = lost.recover(&tampered, &[]);
    assert_eq!(refused.code, 5, "an audit finding: {refused:?}");
    let e = refused.error();
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("position {}", lost.head + 1)),
        "names the forged position: {e}"
    );
    assert!(message.contains("nothing was recovered"), "{e}");
    assert_no_ledger(&tampered);
}
