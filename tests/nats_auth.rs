//! tokenledger on a NATS server that authenticates and authorizes: the
//! server runs `deploy/nats-auth.conf` as shipped, `tokenledger serve`
//! authenticates with an nkey, a workspace's service with a password, and
//! NATS permissions keep that service in its workspace. Also: mutual TLS,
//! and operator mode (JWTs signed by an operator and an account, used
//! through `--nats-creds` files).
//!
//! What must hold: each role works with exactly the permissions the file
//! grants; a refusal by NATS is reported as what it is (`forbidden`,
//! `unauthorized`, a bad setting naming its flag), at once rather than as
//! a timeout; no password or seed shows in any output or log.

use futures_util::StreamExt;
use ledger_client::{
    Client, EventFilter, ListQuery, LocalVerifier, NatsAccess, Reason, StartFrom, VerifierOptions,
};
use ledger_core::EventType;
use ledger_testkit::{wait_for, wait_for_async, NatsServer};
use serde_json::json;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

use common::{Reaped, Run, BIN};

/// How long a process may take to reach a state a test waits for.
const DEADLINE: Duration = Duration::from_secs(60);
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// The example config, as operators get it.
const AUTH_CONF: &str = include_str!("../deploy/nats-auth.conf");

/// The example config with its "acme" user copied for workspace "globex",
/// as its header tells operators to do for each workspace.
fn with_globex(conf: &str) -> String {
    let start = conf.find("    {\n      user: acme").expect("the acme user");
    let len = conf[start..]
        .find("\n    }\n")
        .expect("the end of the acme user")
        + "\n    }\n".len();
    let acme = &conf[start..start + len];
    let globex = acme
        .replace("acme", "globex")
        .replace("$ACME_PASSWORD", "$GLOBEX_PASSWORD")
        .replace("$globex_PASSWORD", "$GLOBEX_PASSWORD");
    format!("{}{globex}{}", &conf[..start + len], &conf[start + len..])
}

/// nats-server with `deploy/nats-auth.conf`, and `tokenledger serve` on it
/// as the ledger user.
struct Secured {
    nats: NatsServer,
    serve: Child,
    password: String,
    gateway_password: String,
    ledger_seed: String,
    serve_log: PathBuf,
    dir: tempfile::TempDir,
}

impl Secured {
    fn start() -> Secured {
        Secured::start_with(&with_globex(AUTH_CONF))
    }

    /// As [`Secured::start`], with this authorization config.
    fn start_with(auth_conf: &str) -> Secured {
        let dir = tempfile::tempdir().unwrap();
        let ledger = nkeys::KeyPair::new_user();
        let ledger_seed = ledger.seed().unwrap();
        let seed_file = dir.path().join("ledger.nk");
        std::fs::write(&seed_file, format!("{ledger_seed}\n")).unwrap();
        // Distinctive, so that finding it in an output means a leak.
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let gateway_password = format!("gw-{}", uuid::Uuid::new_v4().simple());
        let config = format!(
            "LEDGER_NKEY: \"{}\"\nACME_PASSWORD: \"{password}\"\n\
             GLOBEX_PASSWORD: \"{password}-globex\"\n\
             GATEWAY_PASSWORD: \"{gateway_password}\"\n{}",
            ledger.public_key(),
            auth_conf
        );
        let nats = NatsServer::start_with_config(&config)
            .expect("nats-server with deploy/nats-auth.conf (run scripts/install-nats.sh)");
        let serve_log = dir.path().join("serve.log");
        let serve = serve_as(&dir.path().join("ledger"), &nats, &seed_file, &serve_log);
        let secured = Secured {
            nats,
            serve,
            password,
            gateway_password,
            ledger_seed,
            serve_log,
            dir,
        };
        let acme = secured.acme();
        assert!(
            wait_for(DEADLINE, || acme.run(&["list"]).code == 0),
            "the ledger never answered acme: {:?}\nserve log:\n{}",
            acme.run(&["list"]),
            secured.serve_log()
        );
        secured
    }

    /// The CLI as acme's service, replies under acme's inbox prefix.
    fn acme(&self) -> Cli {
        Cli {
            url: format!(
                "nats://acme:{}@127.0.0.1:{}",
                self.password,
                self.nats.port()
            ),
            extra: vec!["--nats-inbox-prefix".into(), "_INBOX.acme".into()],
            data_dir: self.dir.path().join("never-created"),
        }
    }

    /// The CLI as globex's service (a copy of acme's role).
    fn globex(&self) -> Cli {
        Cli {
            url: format!(
                "nats://globex:{}-globex@127.0.0.1:{}",
                self.password,
                self.nats.port()
            ),
            extra: vec![
                "--nats-inbox-prefix".into(),
                "_INBOX.globex".into(),
                "--workspace".into(),
                "globex".into(),
            ],
            data_dir: self.dir.path().join("never-created"),
        }
    }

    fn serve_log(&self) -> String {
        std::fs::read_to_string(&self.serve_log).unwrap_or_default()
    }

    /// Asserts that no output of this stack carries a secret.
    fn assert_no_secret_in(&self, what: &str, text: &str) {
        assert!(!text.contains(&self.password), "password in {what}: {text}");
        assert!(!text.contains(&self.ledger_seed), "seed in {what}: {text}");
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

/// `tokenledger serve` authenticating with the seed in `seed_file`, logging
/// at debug (which must still hold no secret) to `log`.
fn serve_as(data: &Path, nats: &NatsServer, seed_file: &Path, log: &Path) -> Child {
    clean(Command::new(BIN))
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--nats", &nats.url(), "--nats-nkey"])
        .arg(seed_file)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn tokenledger serve")
}

fn clean(mut c: Command) -> Command {
    for (var, _) in std::env::vars() {
        if var.starts_with("TOKENLEDGER_") || var == "RUST_LOG" {
            c.env_remove(var);
        }
    }
    c.stdin(Stdio::null());
    c
}

struct Cli {
    url: String,
    extra: Vec<String>,
    data_dir: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Run {
        let mut c = clean(Command::new(BIN));
        c.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--nats", &self.url, "--workspace", "acme", "--json"])
            .args(&self.extra)
            .args(["--actor", "service:acme-billing"])
            .args(args);
        Run::from(c.output().expect("run tokenledger"))
    }

    fn without_inbox_prefix(&self) -> Cli {
        Cli {
            url: self.url.clone(),
            extra: Vec::new(),
            data_dir: self.data_dir.clone(),
        }
    }
}

/// The error object of a failed run, after checking its exit code.
fn refused(run: &Run, exit: i32) -> Value {
    assert_eq!(run.code, exit, "{run:?}");
    run.error()
}

#[test]
fn a_workspace_service_reaches_its_own_workspace_and_nothing_else() {
    let stack = Secured::start();
    let acme = stack.acme();

    let issued = acme.run(&["issue", "--name", "billing"]).json();
    let id = issued["token"]["resourceId"].as_str().expect("token id");
    let got = acme.run(&["get", id]).json();
    assert_eq!(got["token"]["name"], "billing", "{got}");
    // Its role reaches its own secrets too (tokens.query.acme.reveal).
    let revealed = acme.run(&["get", id, "--reveal"]).json();
    assert_eq!(
        revealed["token"]["tokenStr"], issued["token"]["tokenStr"],
        "{revealed}"
    );

    // Another workspace: NATS refuses the publish, and the CLI says so
    // rather than waiting for a reply that cannot come.
    let other = acme.run(&["--workspace", "globex", "issue", "--name", "billing"]);
    let e = refused(&other, 1);
    assert_eq!(e["code"], "forbidden", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("tokens.cmd.globex.issue_client_token"),
        "names the subject: {message}"
    );
    assert!(message.contains("nothing was sent"), "{message}");

    // Replies under the shared _INBOX: acme may not read them.
    let sniffing = acme.without_inbox_prefix().run(&["list"]);
    let e = refused(&sniffing, 1);
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("_INBOX."),
        "names the inbox: {e}"
    );

    // The refused issue appended nothing: acme's token is the only one,
    // and the log holds its one event.
    let list = acme.run(&["list"]).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let history = acme.run(&["history", id]).json();
    assert_eq!(history["events"][0]["position"], 1, "{history}");

    for run in [&other, &sniffing] {
        stack.assert_no_secret_in("CLI output", &format!("{run:?}"));
    }
    stack.assert_no_secret_in("the server's debug log", &stack.serve_log());
}

/// `reveal` has a subject of its own so that a role can read views without
/// the secrets: with the config's documented deny, acme's `get` works and
/// its `get --reveal` is refused by NATS, named as such.
#[test]
fn a_role_may_read_views_and_be_denied_the_secrets() {
    let acme_start = AUTH_CONF.find("      user: acme").expect("the acme user");
    let (head, tail) = AUTH_CONF.split_at(acme_start);
    let tail = tail
        .replacen(
            "publish: [",
            "publish: { deny: [\"tokens.query.acme.reveal\"], allow: [",
            1,
        )
        .replacen(
            "\n        ]\n        subscribe",
            "\n        ] }\n        subscribe",
            1,
        );
    let stack = Secured::start_with(&with_globex(&format!("{head}{tail}")));
    let acme = stack.acme();
    let issued = acme.run(&["issue", "--name", "viewer"]).json();
    let id = issued["token"]["resourceId"].as_str().expect("token id");
    let got = acme.run(&["get", id]).json();
    assert_eq!(got["token"]["name"], "viewer", "{got}");
    let denied = acme.run(&["get", id, "--reveal"]);
    let e = refused(&denied, 1);
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("tokens.query.acme.reveal"),
        "names the subject: {e}"
    );
    assert!(
        !denied.stdout.contains("eyJ"),
        "no token string: {denied:?}"
    );
}

/// A workspace's service follows its own events with the example config's
/// rights: the consumers it may create are those filtered on its workspace,
/// and NATS refuses every other, however the request is put.
#[test]
fn a_workspace_service_watches_its_own_events_and_no_one_elses() {
    let stack = Secured::start();
    let acme = stack.acme();
    let globex = stack.globex();
    let issued = acme.run(&["issue", "--name", "billing"]).json();
    let id = issued["token"]["resourceId"].as_str().unwrap().to_owned();
    globex.run(&["issue", "--name", "billing"]).json();
    acme.run(&["revoke", &id]).json();

    // acme's two events (positions 1 and 3), and not globex's (2).
    let watched = acme.run(&["watch", "--from-start", "--count", "2"]);
    assert_eq!(watched.code, 0, "{watched:?}");
    let events: Vec<Value> = watched
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["workspaceId"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "acme", "client_token_issued"),
            (3, "acme", "token_revoked")
        ],
        "{watched:?}"
    );
    // Without --from: acme may not ask the ledger's head (tokens.snapshot
    // shows every workspace's names), and watching starts at the stream's
    // end instead of failing.
    let live = acme.run(&["watch", "--count", "0"]);
    assert_eq!(live.code, 0, "{live:?}");
    assert!(live.stderr.contains("from position 4"), "{live:?}");

    // globex's events: NATS refuses the consumer at once, and watch says so.
    let other = acme.run(&[
        "--workspace",
        "globex",
        "watch",
        "--from-start",
        "--count",
        "1",
    ]);
    let e = refused(&other, 1);
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("$JS.API.CONSUMER.CREATE.TOKENS."),
        "names the subject: {e}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let access = NatsAccess {
            inbox_prefix: Some("_INBOX.acme".into()),
            ..NatsAccess::default()
        };
        let url = format!(
            "nats://acme:{}@127.0.0.1:{}",
            stack.password,
            stack.nats.port()
        );
        let client = Client::connect_with(&[url], &access).await.unwrap();
        // Several types: the consumer takes every type of acme's events,
        // and the subscription yields only those asked for.
        let filter = EventFilter::all()
            .workspace("acme")
            .types([EventType::TokenRevoked, EventType::TokenTrashed]);
        let mut sub = client.subscribe(filter, StartFrom::Start).await.unwrap();
        let first = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("an event in time")
            .expect("a stream that goes on")
            .expect("a good event");
        assert_eq!(
            (first.position, first.event_type()),
            (3, EventType::TokenRevoked)
        );

        // What acme may not reach is `forbidden` as soon as NATS says so
        // (a timeout would be `timeout` or `jetstream`): a query of
        // globex, a consumer on globex's events or on everyone's. "From
        // now on" reads the stream's state, which acme may.
        let e = client
            .list("globex", &ListQuery::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "forbidden", "{e}");
        assert!(e.to_string().contains("tokens.query.globex.list"), "{e}");
        for filter in [EventFilter::all().workspace("globex"), EventFilter::all()] {
            let e = match client.subscribe(filter.clone(), StartFrom::Start).await {
                Err(e) => e,
                Ok(_) => panic!("a consumer on {filter:?} for acme"),
            };
            assert_eq!(e.code(), "forbidden", "{filter:?}: {e}");
            assert!(e.to_string().contains("CONSUMER.CREATE.TOKENS"), "{e}");
        }
        let live = client
            .subscribe(EventFilter::all().workspace("acme"), StartFrom::New)
            .await
            .expect("acme reads the stream's state");
        assert_eq!(live.next_position(), 4);
        // The client still serves acme after those refusals.
        let page = client
            .list("acme", &ListQuery::default())
            .await
            .expect("acme's list");
        assert_eq!(page.items.len(), 1);

        // Without its inbox prefix, acme may not subscribe to its replies:
        // every request is `forbidden`, the second one without asking.
        let sniffing = Client::connect_with(
            &[format!(
                "nats://acme:{}@127.0.0.1:{}",
                stack.password,
                stack.nats.port()
            )],
            &NatsAccess::default(),
        )
        .await
        .unwrap();
        for _ in 0..2 {
            let e = sniffing
                .list("acme", &ListQuery::default())
                .await
                .unwrap_err();
            assert_eq!(e.code(), "forbidden", "{e}");
            assert!(e.to_string().contains("_INBOX."), "names the inbox: {e}");
        }

        // A create request whose body asks for more than its subject
        // names: the server refuses it (this is what confines acme).
        let nats = client.nats();
        for config in [
            json!({"name": "wide", "filter_subject": "tokens.evt.>", "ack_policy": "none"}),
            json!({"name": "wide", "filter_subjects": ["tokens.evt.>"], "ack_policy": "none"}),
        ] {
            let body = json!({"stream_name": "TOKENS", "config": config});
            let reply = nats
                .request(
                    "$JS.API.CONSUMER.CREATE.TOKENS.wide.tokens.evt.acme.>",
                    body.to_string().into(),
                )
                .await
                .expect("a reply");
            let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
            assert!(
                reply["error"]["code"].as_u64().is_some(),
                "{config}: {reply}"
            );
            assert!(reply.get("config").is_none(), "{config}: {reply}");
        }
    });
    stack.assert_no_secret_in("the watch output", &format!("{watched:?}{other:?}"));
}

/// A gateway with the example config's `gateway` role: a local verifier
/// starts, follows a revocation, and proves itself in sync (also with the
/// ledger down, from the stream's state); the gateway can send no command.
#[test]
fn a_gateway_verifies_locally_with_only_its_role() {
    let mut stack = Secured::start();
    let acme = stack.acme();
    let issued = acme.run(&["issue", "--name", "edge"]).json();
    let id = issued["token"]["resourceId"].as_str().unwrap().to_owned();
    let token_str = issued["token"]["tokenStr"].as_str().unwrap().to_owned();

    let gateway = Cli {
        url: format!(
            "nats://gateway:{}@127.0.0.1:{}",
            stack.gateway_password,
            stack.nats.port()
        ),
        extra: vec!["--nats-inbox-prefix".into(), "_INBOX.gateway".into()],
        data_dir: stack.dir.path().join("never-created"),
    };
    let e = refused(&gateway.run(&["revoke", &id]), 1);
    assert_eq!(e["code"], "forbidden", "a gateway sends no command: {e}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // ledger-client sends the URL's user and password (async-nats alone
        // parses them and sends nothing), and a wrong one is refused
        // without showing it.
        let url =
            |password: &str| format!("nats://gateway:{password}@127.0.0.1:{}", stack.nats.port());
        Client::connect(url(&stack.gateway_password))
            .await
            .expect("the password in the URL is sent");
        let wrong = Client::connect(url("wrong-password")).await.unwrap_err();
        assert_eq!(wrong.code(), "connect", "{wrong}");
        assert!(!wrong.to_string().contains("wrong-password"), "{wrong}");
        let access = NatsAccess {
            inbox_prefix: Some("_INBOX.gateway".into()),
            ..NatsAccess::default()
        };
        let client = Client::connect_with(&[url(&stack.gateway_password)], &access)
            .await
            .expect("the gateway connects");
        let nats = client.nats().clone();
        let options = VerifierOptions {
            probe_every: Duration::from_millis(50),
            max_staleness: Some(Duration::from_secs(5)),
            ..VerifierOptions::default()
        };
        let v = LocalVerifier::start_with(client, None, options)
            .await
            .expect("the verifier starts with the gateway's rights");
        assert!(v.check(&token_str).is_ok(), "{:?}", v.check(&token_str));

        // What the freshness probe asks of the stream is allowed.
        let stream = async_nats::jetstream::new(nats)
            .get_stream_no_info("TOKENS")
            .await
            .unwrap();
        let last = stream
            .get_info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let first = stream
            .raw_message_builder()
            .sequence(1)
            .next_by_subject("tokens.evt.acme.*.*")
            .send()
            .await
            .expect("the next event of a scope");
        assert_eq!(first.sequence, 1);

        assert_eq!(acme.run(&["revoke", &id]).code, 0);
        assert!(
            wait_for_async(DEADLINE, || async {
                v.check(&token_str) == Err(Reason::Revoked)
            })
            .await,
            "{:?}",
            v.check(&token_str)
        );
        assert!(v.position() > last);

        // The ledger goes down: the stream's state stands in for its head.
        let _ = stack.serve.kill();
        let _ = stack.serve.wait();
        let down = now_ms();
        assert!(
            wait_for_async(DEADLINE, || async { v.confirmed_at_ms() >= down }).await,
            "no proof with the ledger down: confirmed at {}",
            v.confirmed_at_ms()
        );
    });
}

/// `recover` as the ledger's user, with the shipped config: its role reads
/// the stream and the lease, which recover needs.
#[test]
fn the_ledger_user_recovers_a_lost_data_dir() {
    let mut stack = Secured::start();
    let acme = stack.acme();
    acme.run(&["issue", "--name", "kept"]).json();
    common::sigterm(&stack.serve);
    assert!(stack.serve.wait().unwrap().success());
    let lost = stack.dir.path().join("ledger");
    let new = stack.dir.path().join("recovered");
    std::fs::create_dir(&new).unwrap();
    for f in ["master.key", "jwt-keys.json"] {
        std::fs::copy(lost.join(f), new.join(f)).unwrap();
    }
    let mut c = clean(Command::new(BIN));
    c.arg("--data-dir")
        .arg(&new)
        .args(["--nats", &stack.nats.url(), "--json", "--nats-nkey"])
        .arg(stack.dir.path().join("ledger.nk"))
        .arg("recover");
    let run = Run::from(c.output().unwrap());
    let report = run.json();
    assert_eq!(report["recovered"]["events"], 1, "{report}");
    stack.assert_no_secret_in("recover's output", &format!("{run:?}"));
}

#[test]
fn wrong_credentials_are_unauthorized_and_never_shown() {
    let stack = Secured::start();
    let wrong = Cli {
        url: format!(
            "nats://acme:not-{}@127.0.0.1:{}",
            stack.password,
            stack.nats.port()
        ),
        ..stack.acme()
    };
    let run = wrong.run(&["list"]);
    let e = refused(&run, 1);
    assert_eq!(e["code"], "unauthorized", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("acme:***@127.0.0.1"), "{message}");
    stack.assert_no_secret_in("CLI output", &format!("{run:?}"));

    // A ledger whose nkey the server does not know stops with the same code
    // instead of retrying forever.
    let stranger = stack.dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let log = stack.dir.path().join("stranger.log");
    let mut serve = Reaped::new(serve_as(
        &stack.dir.path().join("other"),
        &stack.nats,
        &stranger,
        &log,
    ));
    assert!(
        wait_for(DEADLINE, || !matches!(serve.try_wait(), Ok(None))),
        "serve kept running with unknown credentials"
    );
    let status = serve.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("unauthorized"), "{said}");
    assert!(said.contains("authorization violation"), "{said}");
}

#[test]
fn access_settings_that_cannot_work_are_invalid_input_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.nk");
    let cli = |args: &[&str]| {
        let mut c = clean(Command::new(BIN));
        c.arg("--data-dir")
            .arg(dir.path().join("never-created"))
            // Nothing listens there: the settings fail before any connection.
            .args([
                "--nats",
                "nats://127.0.0.1:1",
                "--workspace",
                "acme",
                "--json",
            ])
            .args(args);
        Run::from(c.output().unwrap())
    };
    for (args, field) in [
        (
            vec!["--nats-nkey", missing.to_str().unwrap(), "list"],
            "nats-nkey",
        ),
        (
            vec!["--nats-creds", missing.to_str().unwrap(), "list"],
            "nats-creds",
        ),
        (
            vec!["--nats-tls-cert", missing.to_str().unwrap(), "list"],
            "nats-tls-key",
        ),
        (
            vec!["--nats-inbox-prefix", "_INBOX.*", "list"],
            "nats-inbox-prefix",
        ),
    ] {
        let run = cli(&args);
        let e = refused(&run, 2);
        assert_eq!(e["code"], "invalid_input", "{args:?}: {e}");
        assert_eq!(e["field"], field, "{args:?}: {e}");
    }
    // serve checks them too, before touching NATS.
    let run = cli(&["--nats-nkey", missing.to_str().unwrap(), "serve"]);
    let e = refused(&run, 2);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("invalid_input"), Some("nats-nkey"))
    );
}

/// A CA, and a server and a client certificate it signed, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            vec!["acme-billing".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server.0),
            server_key: write("server.key", &server.1),
            client_cert: write("client.pem", &client.0),
            client_key: write("client.key", &client.1),
        }
    }

    /// The CLI's flags for this PKI (`with_client`: present the client certificate).
    fn flags(&self, with_client: bool) -> Vec<String> {
        let mut flags = vec!["--nats-tls-ca".into(), self.ca.display().to_string()];
        if with_client {
            flags.extend([
                "--nats-tls-cert".into(),
                self.client_cert.display().to_string(),
                "--nats-tls-key".into(),
                self.client_key.display().to_string(),
            ]);
        }
        flags
    }
}

#[test]
fn serve_and_cli_work_over_mutual_tls_and_refuse_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let config = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let nats = NatsServer::start_with_config(&config).expect("nats-server with TLS");
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let log = dir.path().join("serve.log");
    let mut serve = clean(Command::new(BIN))
        .arg("--data-dir")
        .arg(dir.path().join("ledger"))
        .args(["serve", "--nats", &url])
        .args(pki.flags(true))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(Reaped::new)
        .unwrap();
    let cli = |flags: Vec<String>| Cli {
        url: url.clone(),
        extra: flags,
        data_dir: dir.path().join("never-created"),
    };
    let trusted = cli(pki.flags(true));
    let answered = wait_for(DEADLINE, || trusted.run(&["list"]).code == 0);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        answered,
        "no answer over TLS: {:?}\nserve log:\n{said}",
        trusted.run(&["list"])
    );
    // serve was killed above: the refusals below are NATS's and TLS's own.
    let issued = trusted.run(&["issue", "--name", "over-tls"]);
    assert_eq!(
        issued.code, 3,
        "serve is gone, the TLS connection still works: {issued:?}"
    );

    // No client certificate: the server's verification refuses it.
    let run = cli(pki.flags(false)).run(&["list"]);
    let e = refused(&run, 1);
    assert_eq!(e["code"], "unauthorized", "{e}");
    // A CA that did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::create(other.path());
    let run = cli(stranger.flags(true)).run(&["list"]);
    let e = refused(&run, 1);
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert!(e["message"].as_str().unwrap().contains("TLS"), "{e}");
}

/// A NATS JWT (`alg: ed25519-nkey`), as `nsc` issues them: `claims` signed
/// by `issuer`, with the standard fields filled in.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{claims}");
    let signature = URL_SAFE_NO_PAD.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

/// A `.creds` file as `nsc` writes it: the user JWT, then its seed.
fn creds_file(path: &Path, jwt: &str, user: &nkeys::KeyPair) {
    let seed = user.seed().unwrap();
    std::fs::write(
        path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
}

/// Operator mode (decentralized JWT auth, as NGS or `nsc` set up): `serve`
/// and the CLI authenticate with `--nats-creds`; a user signed by an
/// account the server does not know is `unauthorized`.
#[test]
fn serve_and_cli_work_with_credentials_files_in_operator_mode() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "tokenledger-test",
        serde_json::json!({"type": "operator", "version": 2,
                           "system_account": system.public_key()}),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "ledger",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user = |issuer: &nkeys::KeyPair, name: &str| {
        let key = nkeys::KeyPair::new_user();
        let jwt = nats_jwt(
            issuer,
            &key.public_key(),
            name,
            serde_json::json!({"type": "user", "version": 2,
                               "subs": -1, "data": -1, "payload": -1}),
        );
        let path = dir.path().join(format!("{name}.creds"));
        creds_file(&path, &jwt, &key);
        (path, key.seed().unwrap(), jwt)
    };
    let (ledger_creds, ledger_seed, _) = user(&account, "ledger");
    let (service_creds, _, _) = user(&account, "service");
    let stranger = nkeys::KeyPair::new_account();
    let (stranger_creds, _, _) = user(&stranger, "stranger");
    let config = format!(
        "operator: {operator_jwt:?}\nsystem_account: {}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {}: {account_jwt:?}\n  {}: {system_jwt:?}\n}}\n",
        system.public_key(),
        account.public_key(),
        system.public_key()
    );
    let nats = NatsServer::start_with_config(&config).expect("nats-server in operator mode");
    let log = dir.path().join("serve.log");
    let mut serve = clean(Command::new(BIN))
        .arg("--data-dir")
        .arg(dir.path().join("ledger"))
        .args(["serve", "--nats", &nats.url(), "--nats-creds"])
        .arg(&ledger_creds)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(Reaped::new)
        .unwrap();
    let cli = |creds: &Path| Cli {
        url: nats.url(),
        extra: vec!["--nats-creds".into(), creds.display().to_string()],
        data_dir: dir.path().join("never-created"),
    };
    let service = cli(&service_creds);
    let answered = wait_for(DEADLINE, || service.run(&["list"]).code == 0);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    if !answered {
        let _ = serve.kill();
        let _ = serve.wait();
        panic!(
            "no answer in operator mode: {:?}\nserve log:\n{said}\nnats log:\n{}",
            service.run(&["list"]),
            std::fs::read_to_string(nats.log_path()).unwrap_or_default()
        );
    }
    let issued = service.run(&["issue", "--name", "with-creds"]).json();
    assert_eq!(issued["token"]["name"], "with-creds", "{issued}");

    let run = cli(&stranger_creds).run(&["list"]);
    let e = refused(&run, 1);
    assert_eq!(e["code"], "unauthorized", "{e}");
    // Operator mode admits no one without a signed user.
    let anonymous = Cli {
        url: nats.url(),
        extra: Vec::new(),
        data_dir: dir.path().join("never-created"),
    };
    let e = refused(&anonymous.run(&["list"]), 1);
    assert_eq!(e["code"], "unauthorized", "{e}");
    let _ = serve.kill();
    let _ = serve.wait();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!said.contains(&ledger_seed), "the seed in serve's log");
}
